//go:build !linux

package netlab

import "errors"

// flushConntrackNetlink needs Linux; New skips the lab elsewhere anyway.
func flushConntrackNetlink(string) error {
	return errors.New("conntrack flush over netlink needs Linux")
}
