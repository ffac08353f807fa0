package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"portal/api"
	"portal/internal/cli"
)

func cmdID(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("id", stderr)
	cf := addClientFlags(c)
	if _, err := c.Parse(args, 0); err != nil {
		return err
	}
	var me api.WhoAmI
	if err := newClient(*cf.api).do(ctx, "GET", "/public/meta/whoareyou", nil, &me); err != nil {
		return err
	}
	fmt.Fprintln(stdout, me.ID)
	return nil
}

// statusReport is `portald status --json`.
type statusReport struct {
	Self   api.WhoAmI         `json:"self"`
	API    string             `json:"api"`
	Relays []api.NetworkRelay `json:"relays"`
	Peers  []api.Peer         `json:"peers"`
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("status", stderr)
	cf := addClientFlags(c)
	asJSON := c.Bool("json", false, "print JSON")
	if _, err := c.Parse(args, 0); err != nil {
		return err
	}
	rep := statusReport{API: *cf.api}
	if err := cf.ownerCall(ctx, "GET", "/public/meta/whoareyou", nil, &rep.Self); err != nil {
		return err
	}
	if err := cf.ownerCall(ctx, "GET", "/protected/peers", nil, &rep.Peers); err != nil {
		return err
	}
	var network api.Network
	if err := cf.ownerCall(ctx, "GET", "/protected/network", nil, &network); err != nil {
		return err
	}
	rep.Relays = network.Relays
	if *asJSON {
		return printJSON(stdout, rep)
	}
	reachable := 0
	for _, p := range rep.Peers {
		if p.IsReachable {
			reachable++
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id\t%s\n", rep.Self.ID)
	fmt.Fprintf(tw, "name\t%s\n", rep.Self.Name)
	fmt.Fprintf(tw, "domain\t%s\n", rep.Self.Domain)
	fmt.Fprintf(tw, "overlay\t%s\n", rep.Self.OverlayAddress)
	fmt.Fprintf(tw, "api\t%s\n", rep.API)
	if len(rep.Relays) == 0 {
		fmt.Fprintf(tw, "relays\tnone\n")
	}
	for _, r := range rep.Relays {
		fmt.Fprintf(tw, "relay\t%s\n", relayLine(r))
	}
	fmt.Fprintf(tw, "peers\t%d (%d reachable)\n", len(rep.Peers), reachable)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rep.Peers) == 0 {
		return nil
	}
	fmt.Fprintln(stdout)
	return printPeers(stdout, rep.Peers)
}

// relayLine is one relay address as `portald status` shows it.
func relayLine(r api.NetworkRelay) string {
	var b strings.Builder
	b.WriteString(r.Relay)
	switch {
	case r.Addr == nil:
		b.WriteString(": not resolved")
		return b.String()
	case *r.Addr != r.Relay:
		fmt.Fprintf(&b, " (%s)", *r.Addr)
	}
	if r.Registered && r.RegisteredUntil != nil {
		fmt.Fprintf(&b, ": registered until %s", r.RegisteredUntil.Local().Format(time.TimeOnly))
	} else {
		b.WriteString(": not registered")
	}
	if r.Observed != nil {
		fmt.Fprintf(&b, ", sees us at %s", *r.Observed)
	}
	return b.String()
}

func cmdPeersAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("peers add", stderr)
	cf := addClientFlags(c)
	name := c.String("name", "", "a name for the peer")
	pos, err := c.Parse(args, 1)
	if err != nil {
		return err
	}
	req := api.PutPeerRequest{ID: pos[0]}
	if c.IsSet("name") {
		req.Name = name
	}
	var p api.Peer
	if err := cf.ownerCall(ctx, "PUT", "/protected/peers", req, &p); err != nil {
		return err
	}
	state := "verified"
	if !p.Verified {
		state = "unverified: resolved by prefix, trusted on first use"
	}
	fmt.Fprintf(stdout, "peer %s %s (%s)\n", p.ShortID, quoteName(p.Name), state)
	return nil
}

func cmdPeersLs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("peers ls", stderr)
	cf := addClientFlags(c)
	filter := c.String("name", "", "only peers whose name contains this (case-insensitive)")
	asJSON := c.Bool("json", false, "print JSON")
	if _, err := c.Parse(args, 0); err != nil {
		return err
	}
	path := "/protected/peers"
	if *filter != "" {
		path += "?" + url.Values{"name": {*filter}}.Encode()
	}
	var list []api.Peer
	if err := cf.ownerCall(ctx, "GET", path, nil, &list); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, list)
	}
	if len(list) == 0 {
		fmt.Fprintln(stdout, "no peers")
		return nil
	}
	return printPeers(stdout, list)
}

func cmdPeersRm(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("peers rm", stderr)
	cf := addClientFlags(c)
	pos, err := c.Parse(args, 1)
	if err != nil {
		return err
	}
	if err := cf.ownerCall(ctx, "DELETE", "/protected/peers/"+url.PathEscape(pos[0]), nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "peer %s removed\n", pos[0])
	return nil
}

func cmdPeersConfirm(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("peers confirm", stderr)
	cf := addClientFlags(c)
	pos, err := c.Parse(args, 1)
	if err != nil {
		return err
	}
	var p api.Peer
	if err := cf.ownerCall(ctx, "POST", "/protected/peers/"+url.PathEscape(pos[0])+"/confirm", nil, &p); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "peer %s %s verified: %s\n", p.ShortID, quoteName(p.Name), p.ID)
	return nil
}

func cmdAppsAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("apps add", stderr)
	cf := addClientFlags(c)
	metaFile := c.String("meta", "", "path of the app's app_meta.json")
	upstream := c.String("upstream", "", "base URL of the app's HTTP server")
	var sources cli.List
	c.Var(&sources, "source", "IP address the app calls the core from; repeatable")
	pos, err := c.Parse(args, 1)
	if err != nil {
		return err
	}
	if *metaFile == "" || *upstream == "" || len(sources) == 0 {
		return cli.Usagef("apps add: --meta, --upstream and at least one --source are required")
	}
	meta, err := readFileLimited(*metaFile, api.MaxBodyBytes)
	if err != nil {
		return err
	}
	if !json.Valid(meta) {
		return fmt.Errorf("%s is not valid JSON", *metaFile)
	}
	req := api.PutAppRequest{Meta: meta, Upstream: *upstream, Sources: sources}
	var a api.App
	if err := cf.ownerCall(ctx, "PUT", "/protected/apps/"+url.PathEscape(pos[0]), req, &a); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "app %s installed: upstream %s, sources %s\n", a.Name, a.Upstream, strings.Join(a.Sources, ","))
	for _, w := range a.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	return nil
}

func cmdAppsLs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("apps ls", stderr)
	cf := addClientFlags(c)
	asJSON := c.Bool("json", false, "print JSON")
	if _, err := c.Parse(args, 0); err != nil {
		return err
	}
	var list []api.App
	if err := cf.ownerCall(ctx, "GET", "/protected/apps", nil, &list); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, list)
	}
	if len(list) == 0 {
		fmt.Fprintln(stdout, "no apps")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tUPSTREAM\tSOURCES\tINSTALLED")
	for _, a := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Name, a.Upstream, strings.Join(a.Sources, ","), a.CreatedAt.Local().Format(time.DateTime))
	}
	return tw.Flush()
}

func cmdAppsRm(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("apps rm", stderr)
	cf := addClientFlags(c)
	pos, err := c.Parse(args, 1)
	if err != nil {
		return err
	}
	if err := cf.ownerCall(ctx, "DELETE", "/protected/apps/"+url.PathEscape(pos[0]), nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "app %s removed\n", pos[0])
	return nil
}

func printPeers(w io.Writer, list []api.Peer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SHORT ID\tNAME\tVERIFIED\tREACHABLE\tPATH (FOR)\tENDPOINT\tLAST HANDSHAKE\tRX\tTX")
	for _, p := range list {
		endpoint, hs := "-", "-"
		if p.Endpoint != nil {
			endpoint = *p.Endpoint
		}
		if p.LastHandshake != nil {
			hs = time.Since(*p.LastHandshake).Round(time.Second).String() + " ago"
		}
		path := p.Path
		if p.PathSince != nil {
			path += " (" + time.Since(*p.PathSince).Round(time.Second).String() + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", p.ShortID, quoteName(p.Name), yesNo(p.Verified),
			yesNo(p.IsReachable), path, endpoint, hs, p.RxBytes, p.TxBytes)
	}
	return tw.Flush()
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func quoteName(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func readFileLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}
