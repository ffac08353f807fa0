// Package wiretest holds the endpoints every encoder and decoder of
// package wire's endpoint format is tested with, so that the relay's
// messages and the Portals' control messages are held to one rule by one
// table.
package wiretest

import "net/netip"

// Endpoint is one class of address with the verdict wire.ValidEndpoint
// must give it.
type Endpoint struct {
	Name  string
	Addr  netip.AddrPort
	Valid bool
}

// Endpoints has one entry for each class of address the rule names, on
// both families, IPv4-mapped ones included.
var Endpoints = []Endpoint{
	{"ipv4 unicast", netip.MustParseAddrPort("192.0.2.1:51820"), true},
	{"ipv6 unicast", netip.MustParseAddrPort("[2001:db8::1]:51820"), true},
	{"ipv4 private", netip.MustParseAddrPort("10.1.2.3:1"), true},
	{"ipv6 unique local", netip.MustParseAddrPort("[fd00::1]:65535"), true},
	{"ipv4 loopback", netip.MustParseAddrPort("127.0.0.1:51820"), true},
	{"ipv6 loopback", netip.MustParseAddrPort("[::1]:51820"), true},
	{"ipv4-mapped unicast", netip.MustParseAddrPort("[::ffff:192.0.2.1]:51820"), true},
	{"ipv4-mapped loopback", netip.MustParseAddrPort("[::ffff:127.0.0.1]:51820"), true},
	{"ipv4 port 0", netip.MustParseAddrPort("192.0.2.1:0"), false},
	{"ipv6 port 0", netip.MustParseAddrPort("[2001:db8::1]:0"), false},
	{"ipv4 unspecified", netip.MustParseAddrPort("0.0.0.0:51820"), false},
	{"ipv6 unspecified", netip.MustParseAddrPort("[::]:51820"), false},
	{"ipv4-mapped unspecified", netip.MustParseAddrPort("[::ffff:0.0.0.0]:51820"), false},
	{"ipv4 multicast", netip.MustParseAddrPort("224.0.0.1:51820"), false},
	{"ipv6 multicast", netip.MustParseAddrPort("[ff02::1]:51820"), false},
	{"ipv4-mapped multicast", netip.MustParseAddrPort("[::ffff:239.1.2.3]:51820"), false},
	{"ipv4 broadcast", netip.MustParseAddrPort("255.255.255.255:51820"), false},
	{"ipv4-mapped broadcast", netip.MustParseAddrPort("[::ffff:255.255.255.255]:51820"), false},
	{"ipv4 link-local", netip.MustParseAddrPort("169.254.1.2:51820"), false},
	{"ipv6 link-local", netip.MustParseAddrPort("[fe80::1]:51820"), false},
	{"ipv6 link-local with zone", netip.MustParseAddrPort("[fe80::1%eth0]:51820"), false},
	{"ipv4-mapped link-local", netip.MustParseAddrPort("[::ffff:169.254.1.2]:51820"), false},
	{"ipv6 unicast with zone", netip.MustParseAddrPort("[2001:db8::1%eth0]:51820"), false},
	{"invalid", netip.AddrPort{}, false},
}

// Encodable reports whether e's address can be written at all: the wire
// has no room for a zone, so a sender checks wire.ValidEndpoint before it
// writes, and a round trip tells nothing about a zoned address.
func (e Endpoint) Encodable() bool {
	return e.Addr.IsValid() && e.Addr.Addr().Zone() == ""
}
