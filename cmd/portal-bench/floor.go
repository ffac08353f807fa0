package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
)

// The floor row measures what the process layout alone costs, with no
// tunnel and no HTTP in between: a call crosses the same three processes
// as call_peer and the naive row (client → A → B → app and back), but A and
// B only copy bytes between loopback TCP connections. Each crossing wakes
// an idle process, which on a small VM costs tens of microseconds; its
// sequential p50 is the least any design of separate daemons can reach
// here, whatever they do inside.
//
// A and B are portal-bench itself, re-executed with floorCommand as the
// first argument (floorMain).

// rowFloor is the floor row's name in the table.
const rowFloor = "floor: 2 TCP forwarders"

// floorCommand is the hidden first argument that makes portal-bench run as
// one forwarder of the floor row.
const floorCommand = "floor-forwarder"

// floorMain listens on a loopback port, prints "ready ADDR", and forwards
// every connection to args[0] until its stdin closes.
func floorMain(args []string) int {
	if len(args) != 1 {
		fmt.Println("error: want one argument, the address to forward to")
		return 2
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Printf("error: %v\n", err)
		return 1
	}
	fmt.Printf("ready %s\n", ln.Addr())
	go func() {
		io.Copy(io.Discard, os.Stdin) // the bench closes it, or dies
		os.Exit(0)
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintf(os.Stderr, "floor forwarder: %v\n", err)
			return 1
		}
		go forwardConn(c, args[0])
	}
}

// forwardConn copies c to a new connection to addr and back, until both
// directions end.
func forwardConn(c net.Conn, addr string) {
	defer c.Close()
	u, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer u.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(u, c)
		u.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(c, u)
	c.(*net.TCPConn).CloseWrite()
	<-done
}

// floorForwarder is one forwarder process.
type floorForwarder struct {
	*child
	addr string
}

// startFloorForwarder re-executes this program as a forwarder to addr and
// waits for its ready line.
func startFloorForwarder(addr string) (*floorForwarder, error) {
	c, err := startSelf(floorCommand, addr)
	if err != nil {
		return nil, err
	}
	f := &floorForwarder{child: c}
	if f.addr, err = c.ready(); err != nil {
		c.close()
		return nil, fmt.Errorf("floor forwarder: %w", err)
	}
	return f, nil
}

// floorPair is the floor row's transport: dialing reaches the bench's own
// listener through forwarders A and B.
func floorPair() (*transport, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	b, err := startFloorForwarder(ln.Addr().String())
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	a, err := startFloorForwarder(b.addr)
	if err != nil {
		b.close()
		ln.Close()
		return nil, nil, err
	}
	var d net.Dialer
	tr := &transport{
		dial:   func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", a.addr) },
		listen: ln,
	}
	return tr, func() { a.close(); b.close(); ln.Close() }, nil
}
