package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"portal/api"
	"portal/identity"
	"portal/peers"
	"portal/relay"
)

// TestSelfNameRuleIsTheRelays: a name the API and the store accept for
// this Portal is one the relay records carry whole, and the other way
// round, so that the owner never sets a name that peers see cut or never
// see at all.
func TestSelfNameRuleIsTheRelays(t *testing.T) {
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := relay.NewClient(relay.ClientConfig{
		Key:    key,
		Relays: []string{"127.0.0.1:9"},
		Send:   func([]byte, netip.AddrPort) error { return nil },
		Log:    discardLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"", "Alice's Portal", "a\nb", "a\x7fb", "\u0085", "\xff", "\u200b zero width", "☂"}
	for _, r := range []string{"x", "é", "€", "😀"} {
		for n := 14; n <= 66; n++ {
			names = append(names, strings.Repeat(r, n))
		}
	}
	for _, name := range names {
		storeErr, relayErr := peers.ValidateSelfName(name), rc.SetName(name)
		if (storeErr == nil) != (relayErr == nil) {
			t.Errorf("name of %d bytes %q: store says %v, relay says %v", len(name), name, storeErr, relayErr)
		}
	}
}

// TestOwnerNameWinsOverFlag: `portald name NEW` sets the name, peers that
// look this Portal up at the relay learn it, and it outlives a restart
// with another --name.
func TestOwnerNameWinsOverFlag(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	rel := startRelay(t)
	dataA := t.TempDir()
	a := startDaemon(t, dataA, "--relay", rel.addr, "--name", "flag-one")
	b := startDaemon(t, t.TempDir(), "--relay", rel.addr)
	idA, _, _ := a.state()
	const owners = "Alice's Portal ☂"

	if stdout, stderr, code := a.cli("name"); code != 0 || stdout != "flag-one\n" {
		t.Fatalf("portald name before any set: exit %d, %q %q; want the --name", code, stdout, stderr)
	}
	if stdout, stderr, code := a.cli("name", owners); code != 0 || stdout != "name set: "+owners+"\n" {
		t.Fatalf("portald name NEW: exit %d, %q %q", code, stdout, stderr)
	}
	if _, stderr, code := a.cli("name", strings.Repeat("é", 33)); code != 1 || !strings.Contains(stderr, "66 bytes") || !strings.Contains(stderr, "invalid_name") {
		t.Errorf("portald name with 66 bytes: exit %d, stderr %q; want 1 and invalid_name", code, stderr)
	}
	if _, stderr, code := a.cli("name", "a", "b"); code != 2 || !strings.Contains(stderr, `unexpected argument "b"`) {
		t.Errorf("portald name a b: exit %d, stderr %q; want a usage error", code, stderr)
	}
	if stdout, _, _ := a.cli("name"); stdout != owners+"\n" {
		t.Errorf("portald name after a refused set: %q, want %q", stdout, owners)
	}

	// B pairs with A by short ID and learns A's declared name from the
	// relay; each PUT makes B look A up again.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if status, body := b.request("PUT", "/protected/peers", `{"id":"`+idA[:6]+`"}`); status != 200 {
			t.Fatalf("B adds A: %d %s", status, body)
		}
		var p api.Peer
		_, body := b.request("GET", "/protected/peers/"+idA[:6], "")
		json.Unmarshal(body, &p)
		if p.ID == idA && p.Name == owners {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B does not see A's new name within 15 s: %s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}

	a.stop()
	a2 := startDaemon(t, dataA, "--relay", rel.addr, "--name", "flag-two")
	status, body := a2.request("GET", "/public/meta/whoareyou", "")
	var me api.WhoAmI
	if status != 200 || json.Unmarshal(body, &me) != nil || me.Name != owners {
		t.Errorf("whoareyou after a restart with --name flag-two: %d %s; want the owner's name %q", status, body, owners)
	}
	log := a2.logText()
	if want := `using the name set by the owner; --name \"flag-two\" ignored`; strings.Count(log, want) != 1 {
		t.Errorf("log has %q %d times, want once:\n%s", want, strings.Count(log, want), log)
	}
	if want := fmt.Sprintf(`msg="portald running" id=%s short_id=%s name="%s"`, idA, idA[:6], owners); !strings.Contains(log, want) {
		t.Errorf("start-up line lacks %s (the name the relay records carry):\n%s", want, log)
	}
}
