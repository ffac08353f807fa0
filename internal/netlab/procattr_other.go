//go:build !linux

package netlab

import "syscall"

// setDeathSignal is Linux only (New skips the lab elsewhere anyway).
func setDeathSignal(*syscall.SysProcAttr) {}
