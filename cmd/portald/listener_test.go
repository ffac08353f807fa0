package main

import (
	"net"
	"testing"
	"time"
)

func TestPerSourceLimit(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := limitPerSource(raw, 2)
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	dial()
	first, second := <-accepted, <-accepted
	third := dial()
	// The third connection is closed by the listener: a read ends.
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := third.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection over the limit was served")
	}
	select {
	case c := <-accepted:
		t.Fatalf("a connection over the limit was accepted: %v", c.RemoteAddr())
	default:
	}
	// Closing one frees a slot.
	first.Close()
	first.Close() // a second Close must not free a second slot
	dial()
	<-accepted
	fourth := dial()
	fourth.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := fourth.Read(make([]byte, 1)); err == nil {
		t.Fatal("a double Close freed two slots")
	}
	second.Close()
}
