//go:build !linux

package main

import "os/exec"

// dieWithParent does nothing: only Linux has a parent-death signal. Here
// the daemons are stopped by the bench's own shutdown (daemons.close), so
// a bench that crashes or is killed leaves them running.
func dieWithParent(*exec.Cmd) {}
