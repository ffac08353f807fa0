package main

import (
	"context"
	"fmt"
	"io"

	"portal/console"
)

// cmdConsole asks the running daemon's admin listener for a one-time
// login link to the web console and prints it. The link goes to stdout
// alone, so that a script can take it; the note after it is for people.
func cmdConsole(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("console", stderr)
	cf := addClientFlags(c)
	admin := c.String("admin", defaultAdmin, "address of the daemon's admin listener (its --admin)")
	if _, err := c.Parse(args, 0); err != nil {
		return err
	}
	cl, err := cf.client(true)
	if err != nil {
		return err
	}
	// The link is minted by the admin listener, not the internal API: the
	// console lives there, and the link must name the address the
	// browser will use.
	cl.addr = *admin
	var link onceLink
	if err := cl.do(ctx, "POST", "/login/once", nil, &link); err != nil {
		return fmt.Errorf("console: %w", err)
	}
	fmt.Fprintln(stdout, link.URL)
	fmt.Fprintf(stdout, "(a one-time login link: it works once, within %g minutes)\n", console.OnceTTL.Minutes())
	return nil
}
