package console

import (
	"context"
	"time"
)

// network is GET /protected/network as the console reads it.
type network struct {
	Relays []struct {
		Relay           string     `json:"relay"`
		Addr            string     `json:"addr"`
		Registered      bool       `json:"registered"`
		RegisteredUntil *time.Time `json:"registered_until"`
		Observed        *string    `json:"observed"`
	} `json:"relays"`
	Endpoints []string `json:"endpoints"`
	Peers     []struct {
		ID      string `json:"id"`
		ShortID string `json:"short_id"`
		Name    string `json:"name"`
		Path    string `json:"path"`
		History []struct {
			At       time.Time `json:"at"`
			From     string    `json:"from"`
			To       string    `json:"to"`
			Reason   string    `json:"reason"`
			Endpoint *string   `json:"endpoint"`
		} `json:"history"`
	} `json:"peers"`
}

type (
	networkView struct {
		Relays    []relayRow
		Endpoints []string
		Peers     []historyRow
		Error     string
	}
	relayRow struct {
		Relay, Addr, Observed, Until string
		Registered                   bool
	}
	historyRow struct {
		ShortID, Name, Path string
		Changes             []changeRow
	}
	changeRow struct{ At, From, To, Reason, Endpoint string }
)

// networkOf reads the relays, this Portal's endpoints and the peers' path
// histories.
func (c *Console) networkOf(ctx context.Context) networkView {
	var n network
	if err := c.call(ctx, "GET", "/protected/network", nil, &n); err != nil {
		return networkView{Error: words(err)}
	}
	now := c.cfg.Now()
	v := networkView{Endpoints: n.Endpoints}
	for _, r := range n.Relays {
		row := relayRow{Relay: r.Relay, Addr: r.Addr, Registered: r.Registered, Observed: "—"}
		if r.Observed != nil {
			row.Observed = *r.Observed
		}
		if r.RegisteredUntil != nil {
			row.Until = "until " + r.RegisteredUntil.Sub(now).Round(time.Second).String() + " from now"
		}
		v.Relays = append(v.Relays, row)
	}
	for _, p := range n.Peers {
		h := historyRow{ShortID: p.ShortID, Name: p.Name, Path: p.Path}
		for _, ch := range p.History {
			cr := changeRow{At: ago(now, ch.At), From: ch.From, To: ch.To, Reason: ch.Reason}
			if ch.Endpoint != nil {
				cr.Endpoint = *ch.Endpoint
			}
			h.Changes = append(h.Changes, cr)
		}
		v.Peers = append(v.Peers, h)
	}
	return v
}
