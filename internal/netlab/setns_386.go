//go:build linux

package netlab

// sysSetns is setns(2)'s number; package syscall lacks it on 386.
const sysSetns = 346
