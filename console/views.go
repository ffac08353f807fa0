package console

import (
	"fmt"
	"time"

	"portal/acl"
	"portal/api"
)

// The pages' data. Times are rendered relative to the console's clock
// when the page or fragment is made; the live sections are fetched again
// every two seconds, so "12 s ago" stays true.
type (
	loginForm struct{ Error string }
	message   struct {
		Title, Text string
		LoginLink   bool // offer the login form
	}

	// homePage is the one page with every section.
	homePage struct {
		CSRF    string
		Self    selfView
		Pair    pairForm
		Peers   peersView
		Apps    []appView
		Network networkView
		// Notice is a line about the last change, shown once.
		Notice string
	}

	selfView struct {
		ID, ShortID, Name string
		NameError         string
		Apps              int
		Relays            relaysSummary
	}
	relaysSummary struct {
		Registered, Total int
		Unknown           bool // the network status could not be read
	}

	// nameForm is what the owner typed as this Portal's name, and why it
	// was refused.
	nameForm struct{ Value, Error string }

	// pairForm is the pairing form: what was typed, and the error next
	// to the field that caused it.
	pairForm struct {
		ID, Name           string
		IDError, NameError string
		Error              string
	}

	peersView struct {
		CSRF  string
		Rows  []peerRow
		Error string // the peers could not be read
	}
	peerRow struct {
		ID, ShortID         string
		Name, DeclaredName  string
		Resolved, Verified  bool
		Path, Since         string
		Endpoint, Handshake string
		Rx, Tx              string
		Reachable           bool
	}

	appView struct {
		Name, Upstream string
		Sources        []string
		Paths          []pathView
		Error          string // the manifest could not be read
	}
	pathView struct {
		Prefix, Access string
		Headers        []string // "Name: template"
	}

	// peerPage is one peer's page: rename, and the way to removal.
	peerPage struct {
		CSRF      string
		Peer      peerRow
		Name      string
		NameError string
	}
	// confirmPage asks before a removal.
	confirmPage struct {
		CSRF, Title, Text, Action, Back, Button string
		Error                                   string
	}
)

// peerRowOf is one peer as the peers table shows it.
func peerRowOf(p api.Peer, now time.Time) peerRow {
	row := peerRow{
		ID: p.ID, ShortID: p.ShortID, Name: p.Name, DeclaredName: p.DeclaredName,
		Resolved: p.PublicBytesB64 != nil, Verified: p.Verified, Reachable: p.IsReachable,
		Path: p.Path, Handshake: "never",
		Rx: bytesText(p.RxBytes), Tx: bytesText(p.TxBytes),
	}
	if p.PathSince != nil {
		row.Since = ago(now, *p.PathSince)
	}
	if p.Endpoint != nil {
		row.Endpoint = *p.Endpoint
	}
	if p.LastHandshake != nil {
		row.Handshake = ago(now, *p.LastHandshake)
	}
	return row
}

// appViewOf is one app with its manifest's paths, read by the same parser
// the ingress uses, most specific first as the ingress matches them.
func appViewOf(a api.App) appView {
	v := appView{Name: a.Name, Upstream: a.Upstream, Sources: a.Sources}
	m, err := acl.ParseMeta(a.Meta)
	if err != nil {
		v.Error = "its app_meta.json cannot be read: " + err.Error()
		return v
	}
	for _, p := range m.Paths {
		pv := pathView{Prefix: p.Prefix, Access: string(p.Access)}
		for _, h := range p.Headers {
			pv.Headers = append(pv.Headers, h.Name+": "+h.Value.String())
		}
		v.Paths = append(v.Paths, pv)
	}
	return v
}

// ago says how long before now t was, in the largest unit that fits.
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%d s ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d/time.Hour))
	default:
		return fmt.Sprintf("%d days ago", int(d/(24*time.Hour)))
	}
}

// bytesText is a byte count in binary units.
func bytesText(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
