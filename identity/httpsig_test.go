package identity

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sigFixture is a signer, a verifier and their shared key.
type sigFixture struct {
	from, to *Key
	key      PairKey
	now      time.Time
}

func newSigFixture(t testing.TB) sigFixture {
	t.Helper()
	r := testRand()
	from, to := randomKey(t, r), randomKey(t, r)
	key, err := from.PairKey(to.ID())
	if err != nil {
		t.Fatal(err)
	}
	return sigFixture{from: from, to: to, key: key, now: time.Unix(1767225600, 0)}
}

// newSignedRequest returns a signed POST; with body, it carries a
// Content-Digest that the signature covers.
func (f sigFixture) newSignedRequest(t testing.TB, body string) *http.Request {
	t.Helper()
	r := httptest.NewRequest("POST", "http://notes.hqzcss.portal/api/a%2Fb/items?tag=x%20y&n=1", strings.NewReader(body))
	if body != "" {
		if ok, err := SetContentDigest(r, 1<<16); !ok || err != nil {
			t.Fatalf("SetContentDigest = %v, %v", ok, err)
		}
	}
	if err := SignRequest(r, f.from.ID(), f.key, f.now, "bm9uY2Utbm9uY2Utbm9uY2U"); err != nil {
		t.Fatalf("SignRequest: %v", err)
	}
	return r
}

func (f sigFixture) verify(r *http.Request) (Signature, error) {
	return VerifyRequest(r, f.from.ID(), f.key, f.now, 30*time.Second)
}

func TestSignVerifyRoundTrip(t *testing.T) {
	f := newSigFixture(t)
	for _, body := range []string{"", `{"hello":"world"}`} {
		r := f.newSignedRequest(t, body)
		sig, err := f.verify(r)
		if err != nil {
			t.Fatalf("body %q: VerifyRequest: %v", body, err)
		}
		want := Signature{KeyID: f.from.ID(), Created: f.now, Nonce: "bm9uY2Utbm9uY2Utbm9uY2U", CoversDigest: body != ""}
		if sig != want {
			t.Errorf("body %q: got %+v, want %+v", body, sig, want)
		}
		if body != "" {
			if err := CheckContentDigest(r, 1<<16); err != nil {
				t.Errorf("CheckContentDigest: %v", err)
			}
			got, _ := io.ReadAll(r.Body)
			if string(got) != body {
				t.Errorf("body after check = %q, want %q", got, body)
			}
		}
	}
}

// TestSignatureVector pins the wire format: the headers for a fixed key,
// request, time and nonce. The Signature value was computed independently
// (Python hmac over the base written out by hand from RFC 9421 §2.5).
func TestSignatureVector(t *testing.T) {
	zero, one := seedKey(t, 0), seedKey(t, 1)
	key, err := zero.PairKey(one.ID())
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("POST", "http://Notes.HQZCSS.portal:80/api/items?tag=a%20b", strings.NewReader("hello"))
	if _, err := SetContentDigest(r, 100); err != nil {
		t.Fatal(err)
	}
	if err := SignRequest(r, zero.ID(), key, time.Unix(1767225600, 0), "3q2-7wAAAAAAAAAAAAAAAA"); err != nil {
		t.Fatal(err)
	}
	wantDigest := "sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:"
	wantInput := `sig1=("@method" "@authority" "@path" "@query" "content-digest");created=1767225600;nonce="3q2-7wAAAAAAAAAAAAAAAA";keyid="` + zeroSeedID + `";alg="hmac-sha256"`
	if got := r.Header.Get("Content-Digest"); got != wantDigest {
		t.Errorf("Content-Digest = %q, want %q", got, wantDigest)
	}
	if got := r.Header.Get("Signature-Input"); got != wantInput {
		t.Errorf("Signature-Input = %q, want %q", got, wantInput)
	}
	wantBase := `"@method": POST
"@authority": notes.hqzcss.portal
"@path": /api/items
"@query": ?tag=a%20b
"content-digest": ` + wantDigest + `
"@signature-params": ` + strings.TrimPrefix(wantInput, "sig1=")
	mac := hmac.New(sha256.New, key[:])
	mac.Write([]byte(wantBase))
	wantSig := "sig1=:" + base64.StdEncoding.EncodeToString(mac.Sum(nil)) + ":"
	if got := r.Header.Get("Signature"); got != wantSig {
		t.Errorf("Signature = %q, want %q (HMAC of the hand-written base)", got, wantSig)
	}
	const pinned = "sig1=:GZuB2mFO4YCjnx8UALUHtBtrqO5czfSPPH53RbgNooM=:"
	if got := r.Header.Get("Signature"); got != pinned {
		t.Errorf("Signature = %q, want pinned %q", got, pinned)
	}
}

// TestSignVerifyOverWire signs a client request, sends it through a real
// http.Client and verifies what the http.Server parsed: the base computed on
// both sides must agree for awkward paths and queries.
func TestSignVerifyOverWire(t *testing.T) {
	f := newSigFixture(t)
	got := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := VerifyRequest(r, f.from.ID(), f.key, time.Now(), time.Minute)
		if err == nil {
			err = CheckContentDigest(r, 1<<16)
		}
		got <- err
	}))
	defer srv.Close()
	for _, target := range []string{
		"/",
		"/a%2Fb/c%20d/%E2%82%AC",
		"/x;y=z/(a)/@!$&'*+,=:",
		"/q?x=1&y=%20;z&&",
		"/q?",
		"/empty-query",
		"/%7Euser/~user",
	} {
		req, err := http.NewRequest("PUT", srv.URL+target, strings.NewReader("body"))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "app.abcdef.portal"
		if _, err := SetContentDigest(req, 1<<16); err != nil {
			t.Fatal(err)
		}
		if err := SignRequest(req, f.from.ID(), f.key, time.Now(), "n-"+strconv.Itoa(len(target))); err != nil {
			t.Fatal(err)
		}
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if err := <-got; err != nil {
			t.Errorf("%s: server-side verify: %v", target, err)
		}
	}
}

// replaceParam rewrites one parameter inside Signature-Input.
func replaceInput(r *http.Request, old, new string) {
	r.Header.Set("Signature-Input", strings.Replace(r.Header.Get("Signature-Input"), old, new, 1))
}

func TestVerifyTampering(t *testing.T) {
	f := newSigFixture(t)
	other, err := GenerateKey() // a third Portal
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		tamper func(r *http.Request)
	}{
		{"method", func(r *http.Request) { r.Method = "PUT" }},
		{"method case", func(r *http.Request) { r.Method = "post" }},
		{"authority", func(r *http.Request) { r.Host = "notes.zzzzzz.portal" }},
		{"authority other app", func(r *http.Request) { r.Host = "admin.hqzcss.portal" }},
		{"path", func(r *http.Request) { r.URL.Path, r.URL.RawPath = "/api/a/b/items", "" }},
		{"path escaping", func(r *http.Request) { r.URL.RawPath = "/api/a%2fb/items" }},
		{"query", func(r *http.Request) { r.URL.RawQuery = "tag=x%20y&n=2" }},
		{"query dropped", func(r *http.Request) { r.URL.RawQuery = "" }},
		{"content-digest", func(r *http.Request) {
			r.Header.Set("Content-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(make([]byte, 32))+":")
		}},
		{"content-digest removed", func(r *http.Request) { r.Header.Del("Content-Digest") }},
		{"content-digest line added", func(r *http.Request) { r.Header.Add("Content-Digest", "sha-512=:AAAA:") }},
		{"created", func(r *http.Request) {
			replaceInput(r, "created="+strconv.FormatInt(f.now.Unix(), 10), "created="+strconv.FormatInt(f.now.Unix()+1, 10))
		}},
		{"nonce", func(r *http.Request) { replaceInput(r, `nonce="bm9u`, `nonce="Bm9u`) }},
		{"keyid of the verifier", func(r *http.Request) { replaceInput(r, f.from.ID().String(), f.to.ID().String()) }},
		{"keyid of a third portal", func(r *http.Request) { replaceInput(r, f.from.ID().String(), other.ID().String()) }},
		{"keyid not an id", func(r *http.Request) { replaceInput(r, f.from.ID().String(), "x") }},
		{"alg", func(r *http.Request) { replaceInput(r, `alg="hmac-sha256"`, `alg="ed25519"`) }},
		{"alg missing", func(r *http.Request) { replaceInput(r, `;alg="hmac-sha256"`, ``) }},
		{"label input", func(r *http.Request) { replaceInput(r, "sig1=", "sig2=") }},
		{"label signature", func(r *http.Request) {
			r.Header.Set("Signature", strings.Replace(r.Header.Get("Signature"), "sig1=", "sig2=", 1))
		}},
		{"signature byte", func(r *http.Request) {
			v := r.Header.Get("Signature")
			raw, _ := base64.StdEncoding.DecodeString(v[len("sig1=:") : len(v)-1])
			raw[7] ^= 1
			r.Header.Set("Signature", "sig1=:"+base64.StdEncoding.EncodeToString(raw)+":")
		}},
		{"component dropped", func(r *http.Request) { replaceInput(r, ` "@query"`, ``) }},
		{"component reordered", func(r *http.Request) { replaceInput(r, `"@path" "@query"`, `"@query" "@path"`) }},
		{"digest coverage dropped", func(r *http.Request) { replaceInput(r, ` "content-digest"`, ``) }},
		{"extra parameter", func(r *http.Request) { replaceInput(r, `;alg=`, `;expires=9999999999;alg=`) }},
		{"signature header missing", func(r *http.Request) { r.Header.Del("Signature") }},
		{"signature-input missing", func(r *http.Request) { r.Header.Del("Signature-Input") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.newSignedRequest(t, "some body")
			if _, err := f.verify(r); err != nil {
				t.Fatalf("untampered: %v", err)
			}
			tt.tamper(r)
			_, err := f.verify(r)
			if !errors.Is(err, ErrBadSignature) {
				t.Fatalf("got %v, want an error wrapping ErrBadSignature", err)
			}
		})
	}
}

// signRaw sets Signature-Input to sig1=<inner> and a valid HMAC over the
// base built from exactly those components and parameters, so that only
// VerifyRequest's policy checks can reject it.
func signRaw(t *testing.T, r *http.Request, key PairKey, inner string) {
	t.Helper()
	dict, err := parseSFDictionary("sig1=" + inner)
	if err != nil {
		t.Fatalf("parse %q: %v", inner, err)
	}
	var covered []string
	for _, it := range dict[0].list {
		covered = append(covered, it.str)
	}
	// Components appendSignatureBase cannot compute get a MAC over nothing:
	// VerifyRequest must refuse them before comparing MACs anyway.
	base, _, _ := appendSignatureBase(nil, r, covered, dict[0].params)
	mac := hmac.New(sha256.New, key[:])
	mac.Write(base)
	r.Header.Set("Signature-Input", "sig1="+inner)
	r.Header.Set("Signature", "sig1=:"+base64.StdEncoding.EncodeToString(mac.Sum(nil))+":")
}

func TestVerifyPolicy(t *testing.T) {
	f := newSigFixture(t)
	params := `;created=` + strconv.FormatInt(f.now.Unix(), 10) + `;nonce="n1";keyid="` + f.from.ID().String() + `";alg="hmac-sha256"`
	tests := []struct {
		name  string
		inner string
		ok    bool
	}{
		{"all four", `("@method" "@authority" "@path" "@query")` + params, true},
		{"any order", `("@query" "@path" "@authority" "@method")` + params, true},
		{"params any order", `("@method" "@authority" "@path" "@query");alg="hmac-sha256";keyid="` + f.from.ID().String() + `";nonce="n1";created=` + strconv.FormatInt(f.now.Unix(), 10), true},
		{"no @method", `("@authority" "@path" "@query")` + params, false},
		{"no @authority", `("@method" "@path" "@query")` + params, false},
		{"no @path", `("@method" "@authority" "@query")` + params, false},
		{"no @query", `("@method" "@authority" "@path")` + params, false},
		{"empty list", `()` + params, false},
		{"duplicate component", `("@method" "@authority" "@path" "@query" "@path")` + params, false},
		{"unsupported component", `("@method" "@authority" "@path" "@query" "@target-uri")` + params, false},
		{"header component", `("@method" "@authority" "@path" "@query" "user-agent")` + params, false},
		{"component parameter", `("@method";req="x" "@authority" "@path" "@query")` + params, false},
		{"digest without header", `("@method" "@authority" "@path" "@query" "content-digest")` + params, false},
		{"no created", `("@method" "@authority" "@path" "@query");nonce="n1";keyid="` + f.from.ID().String() + `";alg="hmac-sha256"`, false},
		{"no nonce", `("@method" "@authority" "@path" "@query");created=` + strconv.FormatInt(f.now.Unix(), 10) + `;keyid="` + f.from.ID().String() + `";alg="hmac-sha256"`, false},
		{"no keyid", `("@method" "@authority" "@path" "@query");created=` + strconv.FormatInt(f.now.Unix(), 10) + `;nonce="n1";alg="hmac-sha256"`, false},
		{"created string", `("@method" "@authority" "@path" "@query");created="1";nonce="n1";keyid="` + f.from.ID().String() + `";alg="hmac-sha256"`, false},
		{"created negative", `("@method" "@authority" "@path" "@query");created=-1;nonce="n1";keyid="` + f.from.ID().String() + `";alg="hmac-sha256"`, false},
		{"nonce empty", `("@method" "@authority" "@path" "@query");created=` + strconv.FormatInt(f.now.Unix(), 10) + `;nonce="";keyid="` + f.from.ID().String() + `";alg="hmac-sha256"`, false},
		{"nonce too long", `("@method" "@authority" "@path" "@query");created=` + strconv.FormatInt(f.now.Unix(), 10) + `;nonce="` + strings.Repeat("n", MaxNonceLen+1) + `";keyid="` + f.from.ID().String() + `";alg="hmac-sha256"`, false},
		{"keyid upper case", `("@method" "@authority" "@path" "@query");created=` + strconv.FormatInt(f.now.Unix(), 10) + `;nonce="n1";keyid="` + strings.ToUpper(f.from.ID().String()) + `";alg="hmac-sha256"`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://app.abcdef.portal/x?y", nil)
			signRaw(t, r, f.key, tt.inner)
			_, err := f.verify(r)
			if tt.ok && err != nil {
				t.Fatalf("got %v, want success", err)
			}
			if !tt.ok && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("got %v, want an error wrapping ErrBadSignature", err)
			}
		})
	}
}

func TestVerifyWrongKey(t *testing.T) {
	f := newSigFixture(t)
	r := f.newSignedRequest(t, "")
	third, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := third.PairKey(f.to.ID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyRequest(r, f.from.ID(), wrong, f.now, time.Minute); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("verify with another pair's key: got %v, want ErrBadSignature", err)
	}
	// The right key but the wrong expected sender.
	if _, err := VerifyRequest(r, third.ID(), f.key, f.now, time.Minute); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("verify expecting another sender: got %v, want ErrBadSignature", err)
	}
}

func TestVerifySkew(t *testing.T) {
	f := newSigFixture(t)
	const skew = 30 * time.Second
	for _, tt := range []struct {
		offset time.Duration // now - created
		ok     bool
	}{
		{0, true},
		{skew, true},
		{-skew, true},
		{skew + time.Second, false},
		{-skew - time.Second, false},
		{time.Hour, false},
		{-time.Hour, false},
	} {
		r := f.newSignedRequest(t, "")
		_, err := VerifyRequest(r, f.from.ID(), f.key, f.now.Add(tt.offset), skew)
		if tt.ok != (err == nil) {
			t.Errorf("now-created = %v: got %v, want ok=%v", tt.offset, err, tt.ok)
		}
		if err != nil && (!errors.Is(err, ErrBadSignature) || !errors.Is(err, ErrClockSkew)) {
			t.Errorf("now-created = %v: error %v does not wrap both ErrBadSignature and ErrClockSkew", tt.offset, err)
		}
	}
	// A forged signature out of the window is a bad signature, never
	// clock skew: the skew is only reported for what the peer signed.
	r := f.newSignedRequest(t, "")
	r.Header.Set("X-Unsigned", "x")
	r.Method = "PUT"
	_, err := VerifyRequest(r, f.from.ID(), f.key, f.now.Add(time.Hour), skew)
	if !errors.Is(err, ErrBadSignature) || errors.Is(err, ErrClockSkew) {
		t.Errorf("altered request out of the window: got %v, want ErrBadSignature without ErrClockSkew", err)
	}
}

func TestVerifyMalformedHeaders(t *testing.T) {
	f := newSigFixture(t)
	good := f.newSignedRequest(t, "")
	input, sig := good.Header.Get("Signature-Input"), good.Header.Get("Signature")
	tests := []struct {
		name         string
		inputs, sigs []string
		ok           bool
	}{
		{"as signed", []string{input}, []string{sig}, true},
		{"extra whitespace", []string{"  " + strings.Replace(input, `("@method" `, `(  "@method"   `, 1) + " "}, []string{" " + sig}, true},
		{"duplicate input lines", []string{input, input}, []string{sig}, false},
		{"duplicate signature lines", []string{input}, []string{sig, sig}, false},
		{"second label", []string{input + `, sig2=("@method");created=1`}, []string{sig}, false},
		{"second signature", []string{input}, []string{sig + ", sig2=:AAAA:"}, false},
		{"no inputs", nil, []string{sig}, false},
		{"no signature", []string{input}, nil, false},
		{"empty input", []string{""}, []string{sig}, false},
		{"trailing comma", []string{input + ","}, []string{sig}, false},
		{"input too long", []string{input + strings.Repeat(" ", maxSigInputLen)}, []string{sig}, false},
		{"signature too long", []string{input}, []string{sig + strings.Repeat(" ", maxSignatureLen)}, false},
		{"signature not bytes", []string{input}, []string{`sig1="abc"`}, false},
		{"signature short", []string{input}, []string{"sig1=:AAAA:"}, false},
		{"signature bad base64", []string{input}, []string{strings.Replace(sig, "=:", "=:*", 1)}, false},
		{"signature with param", []string{input}, []string{sig + ";a=1"}, false},
		{"input not a list", []string{`sig1="@method"`}, []string{sig}, false},
		{"input boolean", []string{`sig1`}, []string{sig}, false},
		{"token item", []string{`sig1=(@method)`}, []string{sig}, false},
		{"decimal param", []string{strings.Replace(input, "created=", "created=1.5;x=", 1)}, []string{sig}, false},
		{"unterminated list", []string{strings.TrimSuffix(input, `alg="hmac-sha256"`) + `alg="hmac`}, []string{sig}, false},
		{"control byte", []string{strings.Replace(input, `nonce="`, "nonce=\"\x01", 1)}, []string{sig}, false},
		{"upper-case label", []string{strings.Replace(input, "sig1", "SIG1", 1)}, []string{sig}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.newSignedRequest(t, "")
			r.Header.Del("Signature-Input")
			r.Header.Del("Signature")
			for _, v := range tt.inputs {
				r.Header.Add("Signature-Input", v)
			}
			for _, v := range tt.sigs {
				r.Header.Add("Signature", v)
			}
			_, err := f.verify(r)
			if tt.ok && err != nil {
				t.Fatalf("got %v, want success", err)
			}
			if !tt.ok && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("got %v, want an error wrapping ErrBadSignature", err)
			}
		})
	}
}

func TestSignRequestRejectsBadInput(t *testing.T) {
	f := newSigFixture(t)
	for _, nonce := range []string{"", strings.Repeat("n", MaxNonceLen+1), "a\"b\nc", "caf\u00e9"} {
		r := httptest.NewRequest("GET", "http://a.b.portal/", nil)
		if err := SignRequest(r, f.from.ID(), f.key, f.now, nonce); err == nil {
			t.Errorf("SignRequest(nonce %q) succeeded, want error", nonce)
		}
	}
	r := httptest.NewRequest("GET", "http://a.b.portal/", nil)
	r.Host = "a.b.portal\nX-Evil: 1"
	if err := SignRequest(r, f.from.ID(), f.key, f.now, "n"); err == nil {
		t.Errorf("SignRequest with a line break in Host succeeded, want error")
	}
	r = httptest.NewRequest("GET", "http://a.b.portal/", nil)
	r.Host, r.URL.Host = "", ""
	if err := SignRequest(r, f.from.ID(), f.key, f.now, "n"); err == nil {
		t.Errorf("SignRequest without authority succeeded, want error")
	}
}

func TestAuthority(t *testing.T) {
	for _, tt := range []struct{ url, host, want string }{
		{"http://a.b.portal/", "", "a.b.portal"},
		{"http://a.b.portal/", "A.B.Portal:80", "a.b.portal"},
		{"http://a.b.portal/", "a.b.portal:8080", "a.b.portal:8080"},
		{"https://a.b.portal/", "a.b.portal:443", "a.b.portal"},
		{"https://a.b.portal/", "a.b.portal:80", "a.b.portal:80"},
		{"http://[fd00::1]:80/", "", "[fd00::1]"},
	} {
		r, err := http.NewRequest("GET", tt.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tt.host != "" {
			r.Host = tt.host
		} else {
			r.Host = ""
		}
		if got := authority(r); got != tt.want {
			t.Errorf("authority(%s, Host %q) = %q, want %q", tt.url, tt.host, got, tt.want)
		}
	}
}

func TestContentDigest(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 100)
	newReq := func(b []byte) *http.Request {
		return httptest.NewRequest("POST", "http://a.b.portal/", bytes.NewReader(b))
	}

	r := newReq(body)
	ok, err := SetContentDigest(r, int64(len(body)))
	if !ok || err != nil {
		t.Fatalf("SetContentDigest = %v, %v; want true, nil", ok, err)
	}
	sum := sha256.Sum256(body)
	if got, want := r.Header.Get("Content-Digest"), "sha-256=:"+base64.StdEncoding.EncodeToString(sum[:])+":"; got != want {
		t.Errorf("Content-Digest = %q, want %q", got, want)
	}
	gb, err := r.GetBody()
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := io.ReadAll(gb); !bytes.Equal(again, body) {
		t.Errorf("GetBody returned %d bytes, want the body", len(again))
	}
	if err := CheckContentDigest(r, int64(len(body))); err != nil {
		t.Fatalf("CheckContentDigest: %v", err)
	}
	if got, _ := io.ReadAll(r.Body); !bytes.Equal(got, body) {
		t.Errorf("body after CheckContentDigest: %d bytes, want the body", len(got))
	}

	// Altered body.
	r = newReq(body)
	SetContentDigest(r, 1<<20)
	altered := bytes.Clone(body)
	altered[500] ^= 1
	r.Body = io.NopCloser(bytes.NewReader(altered))
	if err := CheckContentDigest(r, 1<<20); !errors.Is(err, ErrBadSignature) {
		t.Errorf("altered body: got %v, want ErrBadSignature", err)
	}
	// Longer than max, by Content-Length and by actual bytes.
	r = newReq(body)
	SetContentDigest(r, 1<<20)
	if err := CheckContentDigest(r, int64(len(body)-1)); !errors.Is(err, ErrBadSignature) {
		t.Errorf("body over max: got %v, want ErrBadSignature", err)
	}
	r = newReq(body)
	SetContentDigest(r, 1<<20)
	r.ContentLength = -1
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err := CheckContentDigest(r, int64(len(body)-1)); !errors.Is(err, ErrBadSignature) {
		t.Errorf("chunked body over max: got %v, want ErrBadSignature", err)
	}
	// Missing and malformed headers.
	for _, vals := range [][]string{
		nil,
		{"sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":", "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"},
		{"sha-512=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"},
		{"sha-256=:" + base64.StdEncoding.EncodeToString(sum[:16]) + ":"},
		{"sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":, sha-512=:AAAA:"},
		{"sha-256=" + base64.StdEncoding.EncodeToString(sum[:])},
	} {
		r := newReq(body)
		r.Header["Content-Digest"] = vals
		if err := CheckContentDigest(r, 1<<20); !errors.Is(err, ErrBadSignature) {
			t.Errorf("Content-Digest %q: got %v, want ErrBadSignature", vals, err)
		}
	}

	// Left alone: unknown length, empty, too large.
	for _, tt := range []struct {
		name string
		r    *http.Request
	}{
		{"unknown length", func() *http.Request { r := newReq(body); r.ContentLength = -1; return r }()},
		{"empty", newReq(nil)},
		{"too large", newReq(append(body, 'x'))},
	} {
		ok, err := SetContentDigest(tt.r, int64(len(body)))
		if ok || err != nil {
			t.Errorf("%s: SetContentDigest = %v, %v; want false, nil", tt.name, ok, err)
		}
		if tt.r.Header.Get("Content-Digest") != "" {
			t.Errorf("%s: Content-Digest set", tt.name)
		}
	}
	// A body shorter than its Content-Length is an error.
	r = newReq(body)
	r.ContentLength++
	if ok, err := SetContentDigest(r, 1<<20); ok || err == nil {
		t.Errorf("short body: SetContentDigest = %v, %v; want false, error", ok, err)
	}
}

func TestSFDictionary(t *testing.T) {
	tests := []struct {
		in, canon string // canon "" means reject
	}{
		{`a=1`, `a=1`},
		{`a=-999999999999999`, `a=-999999999999999`},
		{`a=1234567890123456`, ``},
		{`a=("x" "y");p=1;q="s"`, `a=("x" "y");p=1;q="s"`},
		{`a=(  "x"   "y"  )`, `a=("x" "y")`},
		{`a=()`, `a=()`},
		{`a="q\"b\\s"`, `a="q\"b\\s"`},
		{`a=:AQID:`, `a=:AQID:`},
		{`a=1,  b=2`, `a=1, b=2`},
		{"a=1,\tb=2", `a=1, b=2`},
		{`a=1, a=2`, ``},
		{`a=1;p=1;p=2`, ``},
		{`a`, ``},
		{`a=tok`, ``},
		{`a=?1`, ``},
		{`a=1.5`, ``},
		{`A=1`, ``},
		{`a=1,`, ``},
		{`a=1 b=2`, ``},
		{`a=("x""y")`, ``},
		{`a=("x"`, ``},
		{`a="x`, ``},
		{`a="\x"`, ``},
		{"a=\"\x7f\"", ``},
		{`a=:AQI:`, ``},
		{`a=:AQ=D:`, ``},
		{`a=:AQID`, ``},
		{`a=1;p`, ``},
		{`a=-`, ``},
		{``, ``},
		{`   `, ``},
	}
	for _, tt := range tests {
		dict, err := parseSFDictionary(tt.in)
		if tt.canon == "" {
			if err == nil {
				t.Errorf("parse %q succeeded, want error", tt.in)
			} else if !errors.Is(err, errSF) {
				t.Errorf("parse %q: error %v does not wrap errSF", tt.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("parse %q: %v", tt.in, err)
			continue
		}
		if got := string(appendSFDictionary(nil, dict)); got != tt.canon {
			t.Errorf("parse %q: serialized %q, want %q", tt.in, got, tt.canon)
		}
	}
}

// appendSFDictionary serializes a parsed dictionary canonically (tests
// only; production code serializes just the parts it signs).
func appendSFDictionary(b []byte, dict []sfMember) []byte {
	for i, m := range dict {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, m.key...)
		b = append(b, '=')
		if m.isList {
			b = appendSFInnerList(b, m.list, m.params)
		} else {
			b = appendSFItem(b, m.item)
		}
	}
	return b
}

// TestPairMAC: pairMAC is HMAC-SHA256 of what follows its first block, as
// crypto/hmac computes it, for bases of every length around the block
// boundaries, whatever the first block held before.
func TestPairMAC(t *testing.T) {
	var key PairKey
	for i := range key {
		key[i] = byte(i*7 + 1)
	}
	for n := range 3*sha256.BlockSize + 2 {
		msg := make([]byte, n)
		for i := range msg {
			msg[i] = byte(i)
		}
		mac := hmac.New(sha256.New, key[:])
		mac.Write(msg)
		buf := append(bytes.Repeat([]byte{0xa5}, sha256.BlockSize), msg...)
		if got := pairMAC(key, buf); !bytes.Equal(got[:], mac.Sum(nil)) {
			t.Fatalf("base of %d bytes: pairMAC %x, crypto/hmac %x", n, got, mac.Sum(nil))
		}
	}
}

// BenchmarkSignVerify signs and verifies one typical forwarded request: a
// POST with a small body whose Content-Digest is already set.
func BenchmarkSignVerify(b *testing.B) {
	f := newSigFixture(b)
	r := httptest.NewRequest("POST", "http://notes.hqzcss.portal/api/v1/items/42?expand=comments&limit=20", nil)
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Content-Digest", "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:")
	const nonce = "3q2-7wAAAAAAAAAAAAAAAA"
	b.ReportAllocs()
	for b.Loop() {
		if err := SignRequest(r, f.from.ID(), f.key, f.now, nonce); err != nil {
			b.Fatal(err)
		}
		if _, err := VerifyRequest(r, f.from.ID(), f.key, f.now, 30*time.Second); err != nil {
			b.Fatal(err)
		}
	}
}

func TestReservedHeader(t *testing.T) {
	for name, want := range map[string]bool{
		"X-Ptl-Client-Id": true, "x-ptl-anything": true, "X-PTL-": true, "Signature": true,
		"signature-input": true, "Content-Digest": true, "content-digest": true,
		"X-Ptl": false, "X-Ptlx": false, "X_Ptl_Client_Id": false, "Signatures": false,
		"Content-Type": false, "Authorization": false, "": false,
	} {
		if got := ReservedHeader(name); got != want {
			t.Errorf("ReservedHeader(%q) = %v, want %v", name, got, want)
		}
	}
}
