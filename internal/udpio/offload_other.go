//go:build !linux

package udpio

import "net"

const (
	MaxSegments  = 1
	MaxCoalesced = 0
	BatchIO      = false
)

func EnableGRO(*net.UDPConn) bool    { return false }
func GSOSupported(*net.UDPConn) bool { return false }
func SegmentControl(int) []byte      { return nil }
func GROSize([]byte) int             { return 0 }

var GROSpace = 0
