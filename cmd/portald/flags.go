package main

import (
	"io"
	"strconv"
	"time"

	"portal/acl"
	"portal/internal/cli"
)

// newCommand starts a portald subcommand's flags.
func newCommand(name string, stderr io.Writer) *cli.Command {
	return cli.NewCommand("portald "+name, stderr)
}

// apiFlag adds the --api flag every client subcommand has.
func apiFlag(c *cli.Command) *string {
	return c.String("api", defaultAPI, "address of the daemon's internal API")
}

// ingressLimits bound a peer's hold on the apps behind the ingress
// (design §2 "Receiving side", step 6).
type ingressLimits struct {
	bodyIdle     time.Duration
	bodyMinRate  int64 // bytes per second; -1 for none
	peerInflight int
}

// ingressFlags adds --body-idle, --body-min-rate and --peer-inflight to c;
// the returned func, called after c.Parse, checks and returns them.
func ingressFlags(c *cli.Command) func() (ingressLimits, error) {
	idle := c.String("body-idle", acl.DefaultBodyIdle.String(), "cut a peer's request body after this long without data")
	rate := c.String("body-min-rate", strconv.Itoa(acl.DefaultBodyMinRate),
		"cut a peer's request body slower than this many bytes per second, averaged over "+acl.DefaultBodyRateWindow.String()+" (0: no minimum)")
	inflight := c.String("peer-inflight", strconv.Itoa(acl.DefaultPeerInflight), "most requests one peer may have in flight at the apps; past it 429")
	return func() (ingressLimits, error) {
		var l ingressLimits
		var err error
		if l.bodyIdle, err = time.ParseDuration(*idle); err != nil || l.bodyIdle <= 0 {
			return l, cli.Usagef("--body-idle %q: want a positive duration such as 60s", *idle)
		}
		if l.bodyMinRate, err = strconv.ParseInt(*rate, 10, 64); err != nil || l.bodyMinRate < 0 {
			return l, cli.Usagef("--body-min-rate %q: want bytes per second, such as 1024, or 0 for no minimum", *rate)
		}
		if l.bodyMinRate == 0 {
			l.bodyMinRate = -1 // acl's "none"; its zero means the default
		}
		if l.peerInflight, err = strconv.Atoi(*inflight); err != nil || l.peerInflight < 1 {
			return l, cli.Usagef("--peer-inflight %q: want a whole number of requests, 1 or more", *inflight)
		}
		return l, nil
	}
}
