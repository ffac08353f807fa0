package netlab

import "syscall"

// setDeathSignal has the kernel SIGKILL the process when the thread that
// started it exits, which for startThread's thread means when the test binary
// dies: a panic in one test ends the binary without running the other tests'
// cleanups, and their daemons must not outlive it. (`ip netns exec` execs
// the program, and the death signal survives that exec.)
func setDeathSignal(a *syscall.SysProcAttr) {
	if a.Pdeathsig == 0 {
		a.Pdeathsig = syscall.SIGKILL
	}
}
