//go:build linux

package netlab

import (
	"bytes"
	"context"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Host is a machine in the lab: a namespace with lo up and one interface,
// eth0, holding Addr. Programs run there with Command or Start.
type Host struct {
	// Name is the name given to PublicHost or Router.Host.
	Name string
	// Addr is the host's address on eth0: public for a PublicHost, on the
	// router's LAN otherwise.
	Addr netip.Addr
	// Netns is the host's namespace, for `ip netns exec` when debugging.
	Netns string
	// Router is the router the host is behind, nil for a public host.
	Router *Router

	lab *Lab
}

// Command returns a command that runs program name with args inside the
// host's namespace, through `ip netns exec`, which looks name up in PATH and
// execs it (so the process is the program itself, not a wrapper). The
// command is in its own process group, which is killed when ctx is done. The
// caller configures and starts it and must stop it before the test ends;
// Start does that, and also has it killed should the test binary die. A
// process left running in a lab namespace is killed at the lab's cleanup
// (not waited for), or, if the test binary died, by the next New.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, h.lab.ip, append([]string{"netns", "exec", h.Netns, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd
}

// Process is a program started by Start, stopped when its test ends.
type Process struct {
	// Cmd is the started command; read it, do not Wait on it.
	Cmd *exec.Cmd

	out      *syncBuffer // nil when the caller set Stdout or Stderr
	ownGroup bool        // it leads its own process group
	done     chan struct{}
	err      error // Cmd.Wait's result, set before done closes

	stopOnce sync.Once
	killed   bool // Stop killed it, so its exit status is ours, not its own
}

// Start starts cmd (typically from Host.Command; any command works) and
// registers a cleanup that kills it, and the children it made, and waits for
// it, so no test leaves a daemon running. The kernel also kills it
// if the test binary dies (a panic, a -timeout) before the cleanup runs. When neither cmd.Stdout nor cmd.Stderr is set,
// both are captured: Output returns them, and they are logged if the test
// fails, which is usually the only way to see why a daemon misbehaved. Start
// fails the test if cmd cannot start.
func Start(t testing.TB, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{Cmd: cmd, done: make(chan struct{})}
	if cmd.Stdout == nil && cmd.Stderr == nil {
		p.out = &syncBuffer{}
		cmd.Stdout = p.out
		cmd.Stderr = p.out
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	// Then Stop kills the group, reaching the process's children too.
	p.ownGroup = cmd.SysProcAttr.Setpgid && cmd.SysProcAttr.Pgid == 0
	setDeathSignal(cmd.SysProcAttr)
	if cmd.WaitDelay == 0 {
		// A grandchild still holding the output pipe must not hang Wait.
		cmd.WaitDelay = 5 * time.Second
	}
	if err := startOnLockedThread(cmd); err != nil {
		t.Fatalf("netlab: start %s: %v", strings.Join(cmd.Args, " "), err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Logf("netlab: %s had exited: %v", strings.Join(cmd.Args, " "), err)
		}
		if t.Failed() && p.out != nil {
			t.Logf("netlab: output of %s:\n%s", strings.Join(cmd.Args, " "), p.out.String())
		}
	})
	return p
}

// Stop kills the process (SIGKILL, to its whole process group when it leads
// one, as commands from Host.Command do) unless it has exited, and waits for
// it. It returns nil when Stop
// killed it, and the process's own exit error when it had already exited by
// itself, so a test can tell a crash from a stop. Calling it again returns
// the same.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
		default:
			p.killed = true
			if p.ownGroup {
				_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
			} else {
				_ = p.Cmd.Process.Kill()
			}
			<-p.done
		}
	})
	if p.killed {
		return nil
	}
	return p.err
}

// Done is closed when the process has exited, by itself or by Stop.
func (p *Process) Done() <-chan struct{} { return p.done }

// Output returns what the process wrote to stdout and stderr so far, when
// Start captured them (neither was set), else "".
func (p *Process) Output() string {
	if p.out == nil {
		return ""
	}
	return p.out.String()
}

// starter is the goroutine that starts every Process, locked to its thread
// for the life of the test binary. The kernel sends a process its death
// signal when the thread that forked it exits, and the Go runtime ends a
// thread whenever a goroutine that locked it returns (flushConntrackNetlink
// does): a process forked from an ordinary goroutine could be killed at any
// time.
var starter struct {
	once sync.Once
	reqs chan func()
}

// startOnLockedThread runs cmd.Start on the starter's thread.
func startOnLockedThread(cmd *exec.Cmd) error {
	starter.once.Do(func() {
		starter.reqs = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread must not exit
			for f := range starter.reqs {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	starter.reqs <- func() { errc <- cmd.Start() }
	return <-errc
}

// syncBuffer is a bytes.Buffer safe for the exec copier and readers at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
