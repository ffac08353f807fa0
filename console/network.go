package console

import (
	"context"
	"time"

	"portal/api"
)

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
	var n api.Network
	if err := c.call(ctx, "GET", "/protected/network", nil, &n); err != nil {
		return networkView{Error: words(err)}
	}
	now := c.cfg.Now()
	v := networkView{Endpoints: n.Endpoints}
	for _, r := range n.Relays {
		row := relayRow{Relay: r.Relay, Addr: "not resolved yet", Registered: r.Registered, Observed: "—"}
		if r.Addr != nil {
			row.Addr = *r.Addr
		}
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
