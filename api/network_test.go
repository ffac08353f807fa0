package api

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"portal/identity"
	"portal/internal/httpx"
)

// newNetworkAPI is newTestAPI with the Status and Network hooks given.
func newNetworkAPI(t *testing.T, status func([]identity.ID) []PeerStatus, network func() NetworkStatus) *testAPI {
	t.Helper()
	return newTestAPI(t, func(c *Config) { c.Status, c.Network = status, network })
}

// TestNetwork: GET /protected/network shows the relays, the endpoints and
// every stored peer with its path history, in the JSON the owner's console
// reads; it is the owner's alone.
func TestNetwork(t *testing.T) {
	bob := newID(t)
	at := time.Date(2026, 11, 29, 13, 59, 1, 0, time.UTC)
	until := time.Date(2026, 11, 29, 14, 0, 0, 0, time.FixedZone("CET", 3600)) // shown in UTC
	var asked [][]identity.ID
	status := func(ids []identity.ID) []PeerStatus {
		asked = append(asked, ids)
		out := make([]PeerStatus, len(ids))
		for i := range out {
			out[i] = PeerStatus{Path: "direct", PathSince: at.Add(time.Second), Endpoint: "127.0.0.1:5000", History: []PathChange{
				{At: at, From: "none", To: "relay", Reason: "relay", Endpoint: "203.0.113.5:51821"},
				{At: at.Add(time.Second), From: "relay", To: "direct", Reason: "answered", Endpoint: "127.0.0.1:5000"},
				{At: at.Add(2 * time.Second), From: "direct", To: "none", Reason: "lost"},
			}}
		}
		return out
	}
	network := func() NetworkStatus {
		return NetworkStatus{
			Relays: []RelayStatus{
				{Relay: "relay.example:51821", Addr: "203.0.113.5:51821", RegisteredUntil: until, Observed: "198.51.100.7:40000"},
				{Relay: "relay2.example:51821", Addr: "203.0.113.6:51821"},
				{Relay: "unresolved.example:51821"},
			},
			Endpoints: []string{"198.51.100.7:40000", "192.168.1.2:51820"},
		}
	}
	a := newNetworkAPI(t, status, network)
	for _, body := range []string{`{"id":"` + bob.String() + `","name":"bob"}`, `{"id":"qqqqqq"}`} {
		if c, b := a.call(t, "PUT", "/protected/peers", body); c != 200 {
			t.Fatalf("setup: %d %s", c, b)
		}
	}
	installed := `{"meta":` + guestbookMeta + `,"upstream":"http://127.0.0.1:9","sources":["127.0.0.1"]}`
	if c, b := a.call(t, "PUT", "/protected/apps/guestbook", installed); c != 200 {
		t.Fatalf("setup: %d %s", c, b)
	}

	asked = nil
	code, body := a.call(t, "GET", "/protected/network", "")
	if code != 200 {
		t.Fatalf("owner: %d %s", code, body)
	}
	if len(asked) != 1 || len(asked[0]) != 1 || asked[0][0] != bob {
		t.Errorf("status asked %v; want once, for bob alone (the prefix peer has no key)", asked)
	}
	peersJSON := []string{
		`{"id":"` + bob.String() + `","short_id":"` + bob.Short() + `","name":"bob","path":"direct","path_since":"2026-11-29T13:59:02Z","endpoint":"127.0.0.1:5000","history":[` +
			`{"at":"2026-11-29T13:59:01Z","from":"none","to":"relay","reason":"relay","endpoint":"203.0.113.5:51821"},` +
			`{"at":"2026-11-29T13:59:02Z","from":"relay","to":"direct","reason":"answered","endpoint":"127.0.0.1:5000"},` +
			`{"at":"2026-11-29T13:59:03Z","from":"direct","to":"none","reason":"lost","endpoint":null}]}`,
		`{"id":"qqqqqq","short_id":"qqqqqq","name":"","path":"none","path_since":null,"endpoint":null,"history":[]}`,
	}
	// The store lists peers in its own order; compare as a set.
	var got struct {
		Relays    json.RawMessage   `json:"relays"`
		Endpoints json.RawMessage   `json:"endpoints"`
		Peers     []json.RawMessage `json:"peers"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	wantRelays := `[{"relay":"relay.example:51821","addr":"203.0.113.5:51821","registered":true,"registered_until":"2026-11-29T13:00:00Z","observed":"198.51.100.7:40000"},` +
		`{"relay":"relay2.example:51821","addr":"203.0.113.6:51821","registered":false,"registered_until":null,"observed":null},` +
		`{"relay":"unresolved.example:51821","addr":null,"registered":false,"registered_until":null,"observed":null}]`
	if string(got.Relays) != wantRelays {
		t.Errorf("relays\n%s\nwant\n%s", got.Relays, wantRelays)
	}
	if want := `["198.51.100.7:40000","192.168.1.2:51820"]`; string(got.Endpoints) != want {
		t.Errorf("endpoints %s, want %s", got.Endpoints, want)
	}
	if len(got.Peers) != len(peersJSON) {
		t.Fatalf("peers %s, want %d", body, len(peersJSON))
	}
	for _, want := range peersJSON {
		found := false
		for _, p := range got.Peers {
			found = found || string(p) == want
		}
		if !found {
			t.Errorf("peers %s\nlack\n%s", body, want)
		}
	}

	// The peers listing is unchanged: no history there.
	if _, b := a.call(t, "GET", "/protected/peers", ""); strings.Contains(string(b), "history") {
		t.Errorf("GET /protected/peers shows a history: %s", b)
	}

	for _, tt := range []struct {
		name   string
		hdr    []string
		status int
		code   string
	}{
		{"an app", []string{"Authorization", ""}, 403, "owner_only"},
		{"a wrong token", []string{"Authorization", "Bearer " + newToken(t).Reveal()}, 401, "bad_token"},
	} {
		status, body := a.call(t, "GET", "/protected/network", "", tt.hdr...)
		var e httpx.Error
		if status != tt.status || json.Unmarshal(body, &e) != nil || e.Code != tt.code {
			t.Errorf("%s: %d %s, want %d %s", tt.name, status, body, tt.status, tt.code)
		}
	}
	if status, body := a.callFrom(t, asStranger, "GET", "/protected/network", "", "Authorization", ""); status != 401 {
		t.Errorf("no token: %d %s, want 401", status, body)
	}
}

// TestNetworkWithoutHooks: with no relays (no Network hook) and no tunnel
// status, every list is still an array.
func TestNetworkWithoutHooks(t *testing.T) {
	a := newNetworkAPI(t, nil, nil)
	if c, b := a.call(t, "PUT", "/protected/peers", `{"id":"`+newID(t).String()+`"}`); c != 200 {
		t.Fatalf("setup: %d %s", c, b)
	}
	code, body := a.call(t, "GET", "/protected/network", "")
	if code != 200 || !strings.HasPrefix(string(body), `{"relays":[],"endpoints":[],"peers":[{`) || !strings.Contains(string(body), `"path":"none","path_since":null,"endpoint":null,"history":[]}`) {
		t.Errorf("GET /protected/network = %d %s", code, body)
	}
	a = newNetworkAPI(t, nil, nil)
	if code, body := a.call(t, "GET", "/protected/network", ""); code != 200 || string(body) != `{"relays":[],"endpoints":[],"peers":[]}`+"\n" {
		t.Errorf("with no peers: %d %q", code, body)
	}
}
