//go:build !linux

package netlab

import (
	"context"
	"errors"
	"net"
)

// DialContext needs Linux; New skips the lab elsewhere anyway.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return nil, errors.New("netlab: dialing inside a namespace needs Linux")
}
