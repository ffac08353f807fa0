//go:build !calltrace

package calltrace

import (
	"net"
	"net/http"
)

// Enabled reports whether this binary records stages.
const Enabled = false

// Mark records nothing in this build.
func Mark(Stage, int) {}

// Events is always empty in this build.
func Events() []Event { return nil }

// Handler is nil in this build: there is nothing to serve.
func Handler() http.Handler { return nil }

// Listener is ln in this build.
func Listener(ln net.Listener, _, _ Stage) net.Listener { return ln }

// Conn is c in this build.
func Conn(c net.Conn, _, _ Stage) net.Conn { return c }

// Dial is dial in this build.
func Dial(dial DialFunc, _, _ Stage) DialFunc { return dial }

// Headers is h in this build.
func Headers(h http.Handler, _ Stage) http.Handler { return h }
