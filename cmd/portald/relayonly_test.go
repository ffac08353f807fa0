package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"portal/api"
)

// TestRelayOnly: with PORTAL_TEST_RELAY_ONLY=1, two Portals on loopback,
// where every direct path works, still reach each other only through the
// relay: a 1 MiB upload arrives intact, both report the peer on the relay
// path and never on a direct one, and the relayed packet counters carry
// the upload.
func TestRelayOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	t.Setenv(relayOnlyEnv, "1") // inherited by the daemons
	a, b, _, _, _, _, _ := pairedPortals(t)
	idA, _, _ := a.state()
	idB, _, _ := b.state()
	a.cli("peers", "add", idB)
	b.cli("peers", "add", idA)
	waitForCall(t, a, idB, 20*time.Second)

	before := a.scrape(t)
	const size = 1 << 20
	resp, err := callPeer(t, caller("127.0.0.1"), a, idB, "/api/peer/upload", io.LimitReader(patternReader(3), size), nil)
	if err != nil {
		t.Fatal(err)
	}
	var rep echoReport
	err = json.NewDecoder(resp.Body).Decode(&rep)
	resp.Body.Close()
	if want, _ := shaOf(io.LimitReader(patternReader(3), size)); err != nil || rep.Length != size || rep.SHA256 != want {
		t.Fatalf("upload through the relay: %d bytes, sha256 %s (err %v); want %d, %s", rep.Length, rep.SHA256, err, size, want)
	}
	after := a.scrape(t)
	// A full-size WireGuard packet carries about 1.4 kB of the upload.
	if out := counter(after, "portal_relayed_packets_total", "direction", "out") - counter(before, "portal_relayed_packets_total", "direction", "out"); out < size/1500 {
		t.Errorf("A relayed %v packets out during a %d-byte upload, want at least %d", out, size, size/1500)
	}
	// The upload left A's stack in GSO superpackets; every one was cut
	// into segments that fit, none dropped.
	if f, dropped := after["portal_outbound_packets_dropped_total"], counter(after, "portal_outbound_packets_dropped_total"); f == nil || dropped != 0 {
		t.Errorf("portal_outbound_packets_dropped_total = %v (exported: %v), want 0", dropped, f != nil)
	}

	for _, d := range []struct {
		self *daemon
		peer string
	}{{a, idB}, {b, idA}} {
		status, body := d.self.request("GET", "/protected/network", "")
		var nw api.Network
		if err := json.Unmarshal(body, &nw); status != http.StatusOK || err != nil || len(nw.Peers) != 1 {
			t.Fatalf("GET /protected/network = %d %s (%v)", status, body, err)
		}
		p := nw.Peers[0]
		if p.ID != d.peer || p.Path != "relay" {
			t.Errorf("peer %s on path %q, want relay: %s", p.ID[:6], p.Path, body)
		}
		for _, c := range p.History {
			if c.To == "direct" {
				t.Errorf("peer %s took a direct path (%s): %s", p.ID[:6], c.Reason, body)
			}
		}
		if !strings.Contains(string(body), `"registered":true`) {
			t.Errorf("no registration with the relay: %s", body)
		}
	}
}
