// Package console is the owner's web console on the admin listener
// (design §2 "Owner console"): for now its login and session machinery and
// one minimal page; the pages of issue 11 come next.
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
// inline script and style, referrers and caching.
//
// The package imports only the standard library: the owner token reaches
// it as a function that checks one, so it never holds the secret itself.
package console
