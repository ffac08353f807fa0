//go:build !linux

package tunnel

import "net"

const (
	maxSegments  = 1
	maxCoalesced = 0
	batchIO      = false
)

func enableGRO(*net.UDPConn) bool    { return false }
func gsoSupported(*net.UDPConn) bool { return false }
func segmentControl(int) []byte      { return nil }
func groSize([]byte) int             { return 0 }

var groSpace = 0
