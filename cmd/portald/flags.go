package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"

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
