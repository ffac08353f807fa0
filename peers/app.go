package peers

import (
	"fmt"
	"net/netip"
	"net/url"
	"time"
)

// App is one installed app as stored: its manifest, where its HTTP server
// listens, and the source addresses its requests to the core come from.
type App struct {
	// Name is the app's name from its manifest; it is also the first label
	// of the host name peers use to reach it.
	Name string
	// Meta is app_meta.json exactly as validated at install.
	Meta []byte
	// Upstream is the base URL of the app's HTTP server.
	Upstream string
	// Sources are the addresses the app calls the core from. Each address
	// belongs to one app, so that a call names its app by its source.
	Sources   []netip.Addr
	CreatedAt time.Time
	UpdatedAt time.Time
}

// ParseUpstream checks an app's upstream, the base URL its requests are
// sent to, and returns it parsed: an absolute http or https URL with a
// host, and no user info, query or fragment (a request's own path and
// query are appended to it). It is the one rule for an upstream: the API
// applies it at install and the ingress to what it reads back. A refusal
// is an ErrInvalid that says what is wrong.
func ParseUpstream(s string) (*url.URL, error) {
	if s == "" {
		return nil, fmt.Errorf(`peers: "upstream" is required: the base URL of the app's HTTP server, such as http://127.0.0.1:8080: %w`, ErrInvalid)
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("peers: upstream %.80q is not a URL: %w: %w", s, err, ErrInvalid)
	}
	var problem string
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		problem = "scheme must be http or https"
	case u.Host == "" || u.Hostname() == "":
		problem = "a host is required"
	case u.User != nil:
		problem = "user info is not allowed"
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		problem = "a query or fragment is not allowed"
	default:
		return u, nil
	}
	return nil, fmt.Errorf("peers: upstream %.80q: %s: %w", s, problem, ErrInvalid)
}
