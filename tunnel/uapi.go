package tunnel

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"portal/identity"
)

// This file is the only place that speaks wireguard-go's UAPI text
// (keys in hex, one key=value per line).

// setPeerConfig is the UAPI text that adds or updates a peer: its key, its
// overlay address as the only allowed IP, and its endpoint, which is the
// peer's ID (see bind.ParseEndpoint).
func setPeerConfig(id identity.ID) string {
	var b strings.Builder
	wg := id.WireGuardKey()
	fmt.Fprintf(&b, "public_key=%s\n", hex.EncodeToString(wg[:]))
	fmt.Fprintf(&b, "replace_allowed_ips=true\nallowed_ip=%s/128\n", id.OverlayAddr())
	fmt.Fprintf(&b, "endpoint=%s\n", id)
	return b.String()
}

// keepaliveConfig is the UAPI text that sets an existing peer's persistent
// keepalive (update_only: a peer removed meanwhile is not brought back).
func keepaliveConfig(id identity.ID, keepalive time.Duration) string {
	wg := id.WireGuardKey()
	return fmt.Sprintf("public_key=%s\nupdate_only=true\npersistent_keepalive_interval=%d\n", hex.EncodeToString(wg[:]), int(keepalive/time.Second))
}

// removePeerConfig is the UAPI text that removes a peer.
func removePeerConfig(id identity.ID) string {
	wg := id.WireGuardKey()
	return fmt.Sprintf("public_key=%s\nremove=true\n", hex.EncodeToString(wg[:]))
}

// deviceConfig is the UAPI text that sets the device's private key.
func deviceConfig(priv [32]byte) string {
	return fmt.Sprintf("private_key=%s\n", hex.EncodeToString(priv[:]))
}

// wgStatus is one peer's state as wireguard-go reports it.
type wgStatus struct {
	lastHandshake time.Time
	rx, tx        uint64
	keepalive     time.Duration
}

// parseStatus reads the UAPI "get" text into a map keyed by WireGuard
// public key.
func parseStatus(text string) (map[[32]byte]wgStatus, error) {
	out := map[[32]byte]wgStatus{}
	var (
		cur    [32]byte
		have   bool
		st     wgStatus
		hsSec  int64
		hsNsec int64
	)
	flush := func() {
		if have {
			if hsSec != 0 || hsNsec != 0 {
				st.lastHandshake = time.Unix(hsSec, hsNsec)
			}
			out[cur] = st
		}
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		var err error
		switch key {
		case "public_key":
			flush()
			var raw []byte
			raw, err = hex.DecodeString(value)
			if err == nil && len(raw) != 32 {
				err = fmt.Errorf("%d bytes", len(raw))
			}
			copy(cur[:], raw)
			have, st, hsSec, hsNsec = true, wgStatus{}, 0, 0
		case "last_handshake_time_sec":
			hsSec, err = strconv.ParseInt(value, 10, 64)
		case "last_handshake_time_nsec":
			hsNsec, err = strconv.ParseInt(value, 10, 64)
		case "rx_bytes":
			st.rx, err = strconv.ParseUint(value, 10, 64)
		case "tx_bytes":
			st.tx, err = strconv.ParseUint(value, 10, 64)
		case "persistent_keepalive_interval":
			var sec uint64
			sec, err = strconv.ParseUint(value, 10, 16)
			st.keepalive = time.Duration(sec) * time.Second
		}
		if err != nil {
			return nil, fmt.Errorf("tunnel: parse device status %s: %w", key, err)
		}
	}
	flush()
	return out, sc.Err()
}
