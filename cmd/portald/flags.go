package main

import (
	"io"

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
