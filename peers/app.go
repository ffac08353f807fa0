package peers

import (
	"net/netip"
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
