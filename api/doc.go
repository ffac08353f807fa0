// Package api is the Portal's internal HTTP API: the listener the apps and the
// owner's command line talk to (the README's "Internal API").
//
// Three kinds of caller reach the listener (the README's "Who may do
// what"): the owner, who presents the owner token ([Token], the file
// owner.token in the data directory) as a bearer credential and may do
// everything; an app, known by its source address in the app registry, which
// may read who this Portal is, read its peers and call them; and anyone
// else, who may only ask who this Portal is. call_peer judges no
// Authorization header, since there it is the app's credential for its
// peer, but refuses one that carries the owner token. On top, a web
// browser on the same machine cannot borrow any of this: a Host header that
// is not an IP literal, "localhost" or "portal_core" is refused (DNS
// rebinding), and so are a request whose Origin names another host and a
// Sec-Fetch-Site of cross-site or same-site.
//
// Every error is JSON, {"error": "<human text>", "code": "<slug>"}, and a
// request that fails changes nothing. Request bodies are capped at
// MaxBodyBytes and decoded strictly: unknown fields and trailing data are
// errors.
//
// api imports identity/, peers/ (the values and errors) and acl/ (manifest
// validation). The store arrives as a [Store] (cmd/portald passes the
// SQLite one) and the call_peer route as a handler, so api never imports
// store/, forwarder/ or tunnel/.
package api
