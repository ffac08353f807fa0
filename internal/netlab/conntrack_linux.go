package netlab

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"syscall"
)

// Netfilter netlink constants (linux/netlink.h, linux/netfilter/nfnetlink.h,
// linux/netfilter/nfnetlink_conntrack.h), absent from package syscall.
const (
	netlinkNetfilter  = 12 // NETLINK_NETFILTER
	nfnlSubsysCTNL    = 1  // NFNL_SUBSYS_CTNETLINK
	ipctnlMsgCTDelete = 2  // IPCTNL_MSG_CT_DELETE
)

// flushConntrackNetlink deletes every IPv4 conntrack entry of the namespace
// whose handle is nsPath, as `conntrack -F` does: an IPCTNL_MSG_CT_DELETE
// request without attributes.
func flushConntrackNetlink(nsPath string) error {
	errc := make(chan error, 1)
	go func() {
		// setns moves only this thread. The goroutine never unlocks it, so the
		// runtime ends the thread with the goroutine instead of reusing a
		// thread that sits in the lab's namespace.
		runtime.LockOSThread()
		errc <- flushInNamespace(nsPath)
	}()
	return <-errc
}

// flushInNamespace moves the calling (locked) thread into the namespace and
// sends the flush on a netlink socket, which belongs to the namespace its
// creator was in.
func flushInNamespace(nsPath string) error {
	f, err := os.Open(nsPath)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, _, e := syscall.Syscall(sysSetns, f.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
		return fmt.Errorf("setns %s: %w", nsPath, e)
	}
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, netlinkNetfilter)
	if err != nil {
		return fmt.Errorf("netfilter netlink socket: %w", err)
	}
	defer syscall.Close(fd)
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &syscall.Timeval{Sec: 5}); err != nil {
		return fmt.Errorf("netlink receive timeout: %w", err)
	}
	kernel := &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return fmt.Errorf("bind netlink socket: %w", err)
	}

	// nlmsghdr (16 bytes) + nfgenmsg (4 bytes), host byte order but res_id.
	const seq = 1
	msg := make([]byte, syscall.NLMSG_HDRLEN+4)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], nfnlSubsysCTNL<<8|ipctnlMsgCTDelete)
	binary.NativeEndian.PutUint16(msg[6:], syscall.NLM_F_REQUEST|syscall.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], seq)
	msg[16] = syscall.AF_INET // nfgen_family; version and res_id stay 0
	if err := syscall.Sendto(fd, msg, 0, kernel); err != nil {
		return fmt.Errorf("send conntrack flush: %w", err)
	}

	buf := make([]byte, os.Getpagesize())
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("read conntrack flush ack: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("parse conntrack flush ack: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != syscall.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return fmt.Errorf("short netlink ack (%d bytes)", len(m.Data))
			}
			if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
				return fmt.Errorf("conntrack flush: %w", syscall.Errno(-errno))
			}
			return nil
		}
	}
}
