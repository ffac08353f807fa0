package identity

import (
	"errors"
	"strings"
	"testing"
)

// FuzzVerifyRequest feeds arbitrary Signature-Input, Signature and
// Content-Digest values to VerifyRequest and CheckContentDigest, with a
// validly signed request among the seeds. It checks that:
//
//   - nothing panics and every error wraps ErrBadSignature;
//   - an accepted signature names exactly the signer, created and nonce of
//     the one valid signature (the MAC binds them, so no mutation of the
//     headers can change what is accepted, only how it is spelled);
//   - every value the structured-field parser accepts serializes to a
//     canonical form that parses back to the same canonical form.
func FuzzVerifyRequest(f *testing.F) {
	fx := newSigFixture(f)
	good := fx.newSignedRequest(f, "fuzz body")
	input, sig, signedDigest := good.Header.Get("Signature-Input"), good.Header.Get("Signature"), good.Header.Get("Content-Digest")
	digest := signedDigest
	f.Add(input, sig, digest)
	f.Add(strings.Replace(input, ` "content-digest"`, "", 1), sig, digest)
	f.Add(input+`, sig2=("@method");created=1`, sig, digest)
	f.Add(`sig1=("@method" "@authority" "@path" "@query");created=1;nonce="a\"b";keyid="x";alg="hmac-sha256"`, "sig1=:AAAA:", "sha-256=:AAAA:")
	f.Add(`sig1=( "a"  "b" );x=-12;y=:AQID:`, `sig1=:`, `sha-256=:`)
	f.Add("", "", "")

	f.Fuzz(func(t *testing.T, input, sig, digest string) {
		for _, v := range []string{input, sig, digest} {
			checkSFCanonical(t, v)
		}
		r := fx.newSignedRequest(t, "fuzz body")
		r.Header["Signature-Input"] = []string{input}
		r.Header["Signature"] = []string{sig}
		r.Header["Content-Digest"] = []string{digest}
		got, err := fx.verify(r)
		if err != nil {
			if !errors.Is(err, ErrBadSignature) {
				t.Fatalf("VerifyRequest error %v does not wrap ErrBadSignature", err)
			}
			return
		}
		if got.KeyID != fx.from.ID() || !got.Created.Equal(fx.now) || got.Nonce != "bm9uY2Utbm9uY2Utbm9uY2U" {
			t.Fatalf("accepted a signature with different parameters: %+v", got)
		}
		if got.CoversDigest {
			if strings.Trim(digest, " \t") != signedDigest {
				t.Fatalf("accepted a covered Content-Digest %q that differs from the signed %q", digest, signedDigest)
			}
			if err := CheckContentDigest(r, 1<<16); err != nil {
				t.Fatalf("CheckContentDigest after a valid signature: %v", err)
			}
		}
	})
}

// checkSFCanonical parses v as a dictionary and, if that succeeds, checks
// that its canonical serialization is a fixed point.
func checkSFCanonical(t *testing.T, v string) {
	dict, err := parseSFDictionary(v)
	if err != nil {
		if !errors.Is(err, errSF) {
			t.Fatalf("parse %q: error %v does not wrap errSF", v, err)
		}
		return
	}
	canon := string(appendSFDictionary(nil, dict))
	again, err := parseSFDictionary(canon)
	if err != nil {
		t.Fatalf("parse %q ok, but its serialization %q does not parse: %v", v, canon, err)
	}
	if got := string(appendSFDictionary(nil, again)); got != canon {
		t.Fatalf("serialization of %q is not stable: %q then %q", v, canon, got)
	}
}
