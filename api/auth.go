package api

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"unicode"

	"portal/internal/httpx"
	"portal/peers"
)

// caller is who sent a request, as the README's "Who may do what" sorts
// them. The order matters: a route admits its caller and every one above.
type caller int

const (
	// anyone is a caller that is neither the owner nor an installed app.
	anyone caller = iota
	// appCaller is a request from a source address in the app registry,
	// without an Authorization header.
	appCaller
	// owner presented the owner token.
	owner
)

// authorize is the middleware of every route but call_peer: it finds the
// caller and lets the request through only when the caller is need or
// above. A request with an Authorization header is the owner's or is
// refused (401 bad_token), whatever its source: a wrong credential is never
// quietly downgraded to the source's rights. An app asking for more than it
// may gets 403 owner_only; anyone else 401 unauthenticated.
func (h *Handler) authorize(need caller) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			who, app, ok := h.identify(w, r)
			if !ok {
				return
			}
			switch {
			case who >= need:
				next.ServeHTTP(w, r)
			case who == appCaller:
				h.cfg.Log.Info("refused an app's owner-only call", "app", app, "method", r.Method, "path", r.URL.Path)
				writeError(w, http.StatusForbidden, "owner_only", "only the Portal's owner may "+r.Method+" "+r.URL.Path+"; apps may read peers and call them")
			default:
				unauthenticated(w, "unauthenticated", "this call needs the owner token (Authorization: Bearer <the content of owner.token in the data directory>)")
			}
		})
	}
}

// identify sorts the request's sender; app is the calling app's name. It
// answers the request itself, and reports false, when the request carries
// a credential that is not the owner token or the registry cannot be read.
func (h *Handler) identify(w http.ResponseWriter, r *http.Request) (who caller, app string, ok bool) {
	if vals := r.Header.Values("Authorization"); len(vals) > 0 {
		if h.cfg.Owner.Matches(Bearer(r)) {
			return owner, "", true
		}
		unauthenticated(w, "bad_token", "the Authorization header does not hold this Portal's owner token")
		return anyone, "", false
	}
	src, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return anyone, "", true
	}
	a, err := h.cfg.Store.AppBySource(r.Context(), src.Addr().Unmap())
	switch {
	case err == nil:
		return appCaller, a.Name, true
	case errors.Is(err, peers.ErrNotFound):
		return anyone, "", true
	default:
		h.storeError(w, r, err)
		return anyone, "", false
	}
}

// carriesOwnerToken reports whether the token appears anywhere in r that
// would reach the peer: any header value (Authorization as Bearer or Basic
// or bare, a cookie, a custom header), the path or the query. Such a
// call_peer would hand the owner's credential to a peer.
func (h *Handler) carriesOwnerToken(r *http.Request) bool {
	found := h.cfg.Owner.In(r.URL.EscapedPath()) || h.cfg.Owner.In(r.URL.RawQuery)
	for _, vals := range r.Header {
		for _, v := range vals {
			if h.cfg.Owner.In(v) {
				found = true
			}
			if cred, err := base64.StdEncoding.DecodeString(basic(v)); err == nil && h.cfg.Owner.In(string(cred)) {
				found = true
			}
		}
	}
	return found
}

// Bearer returns the credentials of r's one "Authorization: Bearer
// <token>" header, or "" when r has none, several, or another scheme: the
// owner's listeners all read the owner token this way.
func Bearer(r *http.Request) string {
	vals := r.Header.Values("Authorization")
	if len(vals) != 1 {
		return ""
	}
	return bearer(vals[0])
}

// bearer returns the credentials of an "Authorization: Bearer <token>"
// value (the scheme in any case, any white space), or "" for another
// scheme.
func bearer(v string) string {
	f := strings.Fields(v)
	if len(f) != 2 || !strings.EqualFold(f[0], "Bearer") {
		return ""
	}
	return f[1]
}

// basic returns the encoded credentials of an "Authorization: Basic ..."
// value, or "": the second of exactly two fields as strings.Fields splits
// them, the first being "Basic" in any case. carriesOwnerToken asks it of
// every header value of every call, so it reads v in place, without
// splitting it into a slice.
func basic(v string) string {
	v = strings.TrimSpace(v)
	end := strings.IndexFunc(v, unicode.IsSpace)
	if end < 0 || !strings.EqualFold(v[:end], "Basic") {
		return ""
	}
	cred := strings.TrimLeftFunc(v[end:], unicode.IsSpace)
	if strings.IndexFunc(cred, unicode.IsSpace) >= 0 {
		return "" // a third field
	}
	return cred
}

func unauthenticated(w http.ResponseWriter, code, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="portald"`)
	writeError(w, http.StatusUnauthorized, code, msg)
}

// browserGuard refuses what only a web browser would send, so that a page
// on any site cannot use the API through the owner's browser: a Host that
// may be a DNS-rebinding name (403 bad_host), an Origin naming another host
// (403 cross_origin), and a Sec-Fetch-Site of cross-site or same-site
// (403 cross_site), which browsers send even on a GET that carries no
// Origin. Clients other than browsers send none of these.
func browserGuard(w http.ResponseWriter, r *http.Request) bool {
	if !httpx.LocalHost(r.Host, "portal_core") {
		writeError(w, http.StatusForbidden, "bad_host", "Host "+quote(r.Host)+" is not served here; use an IP address, localhost or portal_core")
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		if u, err := url.Parse(o); err != nil || !strings.EqualFold(u.Host, r.Host) {
			writeError(w, http.StatusForbidden, "cross_origin", "cross-origin requests are refused")
			return false
		}
	}
	switch strings.ToLower(r.Header.Get("Sec-Fetch-Site")) {
	case "cross-site", "same-site":
		writeError(w, http.StatusForbidden, "cross_site", "requests from other sites are refused")
		return false
	}
	return true
}
