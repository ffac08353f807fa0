// Package forwarder is the sending side of call_peer: it takes an app's
// request to
//
//	ANY /internal/call_peer/{peer-id}/{path...}
//
// on the internal API and sends it, signed, through the WireGuard tunnel to
// http://<app>.<peer short id>.portal/{path...} on the peer's overlay
// address, TCP port 80, then relays the peer's answer back, streamed.
//
// # Overview
//
// [Forwarder] is an [http.Handler] built around one
// [httputil.ReverseProxy] whose Rewrite hook routes, cleans and signs each
// request; the proxy does the streaming (bodies both ways, trailers,
// protocol upgrades such as WebSocket). Its Transport dials only through
// the tunnel ([Config.Dial]): there is no fallback to the host network.
//
// A call is checked in this order, each failure with its own status and a
// JSON body {"error": "...", "code": "..."}:
//
//  1. the calling app, by the request's source address (403 unknown_app);
//  2. the peer ID or prefix in the path (422 invalid_id);
//  3. the peer, by full ID or unique prefix (404 not_found, 409 ambiguous);
//  4. reachability: a peer whose key is not known yet, a failed dial or a
//     failed exchange answer 502 unreachable; no connection or no response
//     headers within [Config.CallTimeout] answer 504 timeout.
//
// # What the peer receives
//
// The same method, path (with its original escaping) and query, the body
// (streamed; bodies of known length up to [Config.DigestMax] are buffered to
// compute a Content-Digest), and the end-to-end headers, minus hop-by-hop
// headers, every X-Ptl-* header and any Signature, Signature-Input and
// Content-Digest the app sent (those are the forwarder's to set). No
// X-Forwarded-* headers are added: the peer identifies the caller by the
// tunnel and the signature, not by addresses. The last step before sending
// is [identity.SignRequest] with the pair key of this Portal and the peer
// and a counter nonce ([identity.CounterNonce]): this run's random BootID
// and a counter per peer, which the receiver checks against a sliding
// window.
//
// # Timeouts
//
// CallTimeout bounds the dial and, once the request is written, the wait for
// the response headers. Bodies then have no total deadline: each
// connection carries an idle deadline of [Config.IdleTimeout] that every
// read or write pushes back, so a stalled peer frees its resources while a
// long transfer that keeps moving is never cut.
//
// # Clock skew
//
// A peer answers 401 clock_skew, with its own time in the JSON field "now",
// to a request whose signature is valid but whose created time is outside
// its skew window. The Forwarder passes that answer to the app unchanged and
// logs a warning with the measured offset once per peer: again only after
// another answer from that peer, or when the offset moves by 5 s or more.
//
// # Imports
//
// forwarder imports identity/ (signing) and peers/ (the values and errors
// its lookups return). It never imports store/ (the lookups arrive as a
// [Directory]), acl/ (the receiving side) or tunnel/ (the tunnel arrives
// as a dial function).
package forwarder
