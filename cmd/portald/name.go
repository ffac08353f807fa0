package main

import (
	"context"
	"fmt"
	"io"

	"portal/api"
)

// cmdName is `portald name [NEW]`: it prints this Portal's name or, given
// NEW, sets it as the owner ("" for no name). The name set here is stored
// and wins over `portald run --name` from then on.
func cmdName(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("name", stderr)
	cf := addClientFlags(c)
	pos, err := c.ParseAtMost(args, 1)
	if err != nil {
		return err
	}
	var me api.WhoAmI
	if len(pos) == 0 {
		if err := newClient(*cf.api).do(ctx, "GET", "/public/meta/whoareyou", nil, &me); err != nil {
			return err
		}
		fmt.Fprintln(stdout, me.Name)
		return nil
	}
	if err := cf.ownerCall(ctx, "PUT", "/protected/self", api.PutSelfRequest{Name: &pos[0]}, &me); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "name set: %s\n", quoteName(me.Name))
	return nil
}
