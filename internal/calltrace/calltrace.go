// Package calltrace timestamps the stages of a call_peer request on its way
// through a Portal (the forwarder, the tunnel's stack and Bind, the
// ingress), so that the time of one call can be split hop by hop
// (portal-bench --calltrace, docs/performance.md).
//
// It records only in binaries built with -tags calltrace. In every other
// build Enabled is false and Mark is an empty function that the compiler
// removes, so the hooks cost nothing.
//
// Timestamps are time.Now().UnixNano(): one clock for every process on the
// machine, so that the stages of two daemons and the bench line up.
package calltrace

import (
	"context"
	"net"
)

// Stage is a point on a call's path that a Portal passes.
type Stage uint8

// The stages, in the order a call passes them: A is the calling Portal, B
// the called one. Packet stages (TunRead to TunWrite) happen on both, for
// the request and for the response.
const (
	AppRead      Stage = iota + 1 // A: the app's request bytes read from its connection to the API
	Signed                        // A: the forwarder signed the request
	PeerWrite                     // A: the request written to the connection through the tunnel
	TunRead                       // a packet leaves the stack for wireguard-go, to be sealed
	BindSend                      // a sealed packet handed to the socket
	BindRecv                      // a datagram handed to wireguard-go, to be opened
	TunWrite                      // an opened packet into the stack
	OverlayRead                   // B: request bytes read from a connection through the tunnel
	Admitted                      // B: the ingress admitted the request
	Answered                      // B: the upstream's response headers reached the ingress
	OverlayWrite                  // B: response bytes written to the connection through the tunnel
	PeerRead                      // A: response bytes read from the connection through the tunnel
	AppWrite                      // A: response bytes written to the app's connection
	numStages
)

var names = [numStages]string{
	AppRead: "app_read", Signed: "signed", PeerWrite: "peer_write",
	TunRead: "tun_read", BindSend: "bind_send", BindRecv: "bind_recv", TunWrite: "tun_write",
	OverlayRead: "overlay_read", Admitted: "admitted", Answered: "answered", OverlayWrite: "overlay_write",
	PeerRead: "peer_read", AppWrite: "app_write",
}

// String is the stage's name in a dump.
// DialFunc is a DialContext, as the forwarder's Config.Dial and
// net.Dialer's.
type DialFunc = func(ctx context.Context, network, address string) (net.Conn, error)

func (s Stage) String() string {
	if s == 0 || s >= numStages {
		return "unknown"
	}
	return names[s]
}

// Event is one recorded stage: when, and for packet stages whether the
// packet carried data (a TCP payload, or for sealed packets a size beyond
// a bare ACK's).
type Event struct {
	Stage Stage `json:"stage"`
	At    int64 `json:"at"` // Unix nanoseconds
	Size  int   `json:"size"`
}

// TCPPayload is the TCP payload length of the IPv6 packet p, 0 for anything
// else: the packet stages record it so that data and bare ACKs can be told
// apart.
func TCPPayload(p []byte) int {
	const ipv6Header, tcpProto = 40, 6
	if len(p) < ipv6Header+20 || p[0]>>4 != 6 || p[6] != tcpProto {
		return 0
	}
	payload := int(p[4])<<8 | int(p[5])
	return max(0, payload-int(p[ipv6Header+12]>>4)*4)
}
