// Package api is the Portal's internal HTTP API: the listener the apps and the
// owner's command line talk to (design.md §2 "Internal API").
//
// Anything that can reach the listener is trusted, as the original's internal
// Docker network was, so the API binds to loopback by default. Two checks
// keep a web browser on the same machine from borrowing that trust: a Host
// header that is not an IP literal, "localhost" or "portal_core" is refused
// (DNS rebinding), and so is a request whose Origin names another host
// (cross-site requests).
//
// Every error is JSON, {"error": "<human text>", "code": "<slug>"}, and a
// request that fails changes nothing. Request bodies are capped at
// MaxBodyBytes and decoded strictly: unknown fields and trailing data are
// errors.
//
// api imports identity/, peers/ (the store) and acl/ (manifest validation).
// The call_peer route is served by a handler that cmd/portald passes in, so
// api never imports forwarder/ or tunnel/.
package api
