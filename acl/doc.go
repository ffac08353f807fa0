// Package acl turns an app's app_meta.json manifest into the access rules
// the Portal core enforces for that app.
//
// Apps come from the original Portal (freeshard) platform and describe, in
// the manifest's "paths" object, which URL path prefixes are public, open
// to paired peer Portals, or private to the owner, and which identity
// headers the app receives on admitted requests. This package:
//
//   - parses and validates the manifest once, at install time (ParseMeta;
//     the API hands the result to the Ingress with Ingress.Installed),
//     so that every mistake is reported to the owner with the offending
//     path or header named, and every manifest the original accepted still
//     installs (fields this package does not enforce are kept in Meta.Raw);
//   - compiles header value templates such as "{{ auth.client_id }}" into
//     segments (Template), so serving a request never re-parses them and
//     peer-chosen values can never inject header lines (Template.Render);
//   - reads every key, and at request time the request path, in two ways,
//     strict and lenient, because app servers disagree on what a path
//     means, and applies the more restrictive of the two readings' rules
//     (Meta.Decide); a key that can never match, or keys that read as one
//     with different access, install with a warning (Meta.Warnings).
//
// # Ingress
//
// [Ingress] is the receiving side of call_peer: the http.Handler that
// portald serves on its overlay address, TCP 80, inside the tunnel. It
// names the caller by the connection's source overlay address (WireGuard
// proved it), verifies the RFC 9421 signature and its nonce, checks that
// Host names one of this Portal's apps, applies the path rules above,
// replaces every X-Ptl-* header and every header the manifest sets with
// the rendered templates, and reverse-proxies to the app's upstream,
// streamed, with a bound on each peer's requests in flight and on slow
// request bodies. [Ingress] lists the steps and their statuses.
//
// # Imports
//
// acl imports identity/ (signatures) and peers/ (the Peer and App types it
// is handed); never store/ (its lookups are functions in IngressConfig),
// forwarder/ or tunnel/. A parsed Meta is immutable and
// safe for concurrent use; the package has no package-level mutable state.
package acl
