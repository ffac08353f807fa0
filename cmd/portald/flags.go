package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strconv"
	"time"

	"portal/acl"
	"portal/api"
	"portal/internal/cli"
)

// newCommand starts a portald subcommand's flags.
func newCommand(name string, stderr io.Writer) *cli.Command {
	return cli.NewCommand("portald "+name, stderr)
}

// clientFlags are the flags every client subcommand has: where the daemon
// listens, and where its owner token is.
type clientFlags struct {
	api, data, tokenFile *string
}

func addClientFlags(c *cli.Command) clientFlags {
	return clientFlags{
		api:       c.String("api", defaultAPI, "address of the daemon's internal API"),
		data:      c.String("data", defaultDataDir(), "the daemon's data directory, where the owner token is"),
		tokenFile: c.String("token-file", "", "file holding the owner token (default: owner.token in --data)"),
	}
}

// ownerCall sends one request to the daemon's API as its owner and decodes
// the JSON answer into out (when non-nil).
func (f clientFlags) ownerCall(ctx context.Context, method, path string, body, out any) error {
	cl, err := f.client(true)
	if err != nil {
		return err
	}
	return cl.do(ctx, method, path, body, out)
}

// client returns a client of the daemon. For owner calls it carries the
// owner token, read from --token-file or the data directory; a token that
// cannot be read fails here, in one line that says what to do.
func (f clientFlags) client(asOwner bool) (*client, error) {
	c := newClient(*f.api)
	if !asOwner {
		return c, nil
	}
	path := *f.tokenFile
	if path == "" {
		if *f.data == "" {
			return nil, errors.New("no owner token: give --data DIR (PORTAL_DATA) or --token-file FILE (PORTAL_TOKEN_FILE)")
		}
		path = filepath.Join(*f.data, api.TokenFile)
	}
	tok, err := api.ReadToken(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("no owner token at %s: has portald run with this data directory? Give --data DIR (PORTAL_DATA) or --token-file FILE", path)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("cannot read the owner token at %s: permission denied; run as the user that runs portald", path)
	case err != nil:
		return nil, err
	}
	c.token = tok
	return c, nil
}

// ingressLimits bound a peer's hold on the apps behind the ingress
// (docs/architecture.md "Receiving side", step 6).
type ingressLimits struct {
	bodyIdle     time.Duration
	bodyMinRate  int64 // bytes per second; -1 for none
	peerInflight int
	nonceCache   int
}

// ingressFlags adds --body-idle, --body-min-rate, --peer-inflight and
// --nonce-cache to c;
// the returned func, called after c.Parse, checks and returns them.
func ingressFlags(c *cli.Command) func() (ingressLimits, error) {
	idle := c.String("body-idle", acl.DefaultBodyIdle.String(), "cut a peer's request body after this long without data")
	rate := c.String("body-min-rate", strconv.Itoa(acl.DefaultBodyMinRate),
		"cut a peer's request body slower than this many bytes per second, averaged over "+acl.DefaultBodyRateWindow.String()+" (0: no minimum)")
	inflight := c.String("peer-inflight", strconv.Itoa(acl.DefaultPeerInflight), "most requests one peer may have in flight at the apps; past it 429")
	nonces := c.String("nonce-cache", strconv.Itoa(acl.DefaultNonceCacheSize), "random nonces (from Portals before counter nonces) remembered per peer against replay, each for twice the skew window; past it 429")
	return func() (ingressLimits, error) {
		var l ingressLimits
		var err error
		if l.bodyIdle, err = time.ParseDuration(*idle); err != nil || l.bodyIdle <= 0 {
			return l, cli.Usagef("--body-idle %q: want a positive duration such as 60s", *idle)
		}
		if l.bodyMinRate, err = strconv.ParseInt(*rate, 10, 64); err != nil || l.bodyMinRate < 0 || l.bodyMinRate > 1<<30 {
			return l, cli.Usagef("--body-min-rate %q: want bytes per second up to 1073741824, such as 1024, or 0 for no minimum", *rate)
		}
		if l.bodyMinRate == 0 {
			l.bodyMinRate = -1 // acl's "none"; its zero means the default
		}
		if l.peerInflight, err = strconv.Atoi(*inflight); err != nil || l.peerInflight < 1 || l.peerInflight > 1<<16 {
			return l, cli.Usagef("--peer-inflight %q: want a whole number of requests from 1 to 65536", *inflight)
		}
		if l.nonceCache, err = strconv.Atoi(*nonces); err != nil || l.nonceCache < 1024 || l.nonceCache > 1<<26 {
			return l, cli.Usagef("--nonce-cache %q: want a whole number of nonces from 1024 to 67108864", *nonces)
		}
		return l, nil
	}
}
