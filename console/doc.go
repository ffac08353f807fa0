// Package console is the owner's web console on the admin listener
// (the README's "Console"): one page that shows this Portal's ID (with
// a copy button and a QR code) and name, pairs a friend's Portal by full
// or short ID, lists the peers with their live tunnel status, the
// installed apps with their paths, and the relays with each peer's path
// history; and the pages that rename or remove a peer or an app.
//
// # Acting as the owner
//
// The console holds no state of its own beyond sessions. It reads and
// changes everything through the internal API's handler in-process
// (Config.API), which the daemon hands it with the owner's credential
// added: validation, error codes, logging and the tunnel's hooks are the
// API's, exactly as for the command line. An API error is shown next to
// the field that caused it, in words.
//
// # Login
//
// The owner gets in either with a one-time login link, which `portald
// console` asks the daemon to mint ([Console.MintOnce]), or by typing the
// owner token into the login form. Either starts a session: a random ID in
// the cookie portal_session (HttpOnly, SameSite=Strict, Path=/, Secure over
// TLS) that ends after 12 hours idle, with its own CSRF token.
//
// # Changes
//
// Every change is a POST that carries the session's CSRF token in the form
// field csrf and a same-origin Origin; anything else is refused with 403
// and changes nothing. Every answer carries headers that forbid framing,
// inline script and style, referrers and caching, and a request for a host
// name that is not this machine's is refused. The pages work without
// script; the one embedded script only refreshes the live sections every
// two seconds and copies the ID.
package console
