// Command portald is the Portal core: it keeps the Portal's identity, peers
// and apps, and serves the internal API the apps and this command's client
// subcommands talk to.
//
//	portald run [--data DIR] [--api ADDR] [--admin ADDR [--admin-cert FILE --admin-key FILE]] [--udp PORT] [--relay HOST:PORT]... [--name NAME]
//	portald id | status | console [--admin ADDR] [--admin-ca FILE]
//	portald name [NEW]
//	portald peers add ID [--name N] | ls | rm ID
//	portald apps add NAME --meta FILE --upstream URL --source IP [--source IP]... | ls | rm NAME
//
// The admin listener (--admin) serves /metrics and the web console. On a
// loopback address it is plain HTTP; on any other, the home network, it is
// TLS only, with the owner's --admin-cert and --admin-key or else a
// self-signed certificate it makes in the data directory (admin.crt,
// admin.key) and whose SHA-256 fingerprint it logs. `portald console`
// prints a one-time login link and, over TLS, that fingerprint, for the
// owner to compare with what the browser shows; it trusts admin.crt as it
// is and verifies any other certificate before sending the owner token.
//
// Every flag also has a PORTAL_* environment variable; a flag given on the
// command line wins. Exit codes: 0 success, 1 error (one line on stderr),
// 2 usage.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"portal/internal/cli"
)

const usage = `usage:
  portald run [--data DIR] [--api ADDR] [--udp PORT] [--relay HOST:PORT]... [--name NAME]
  portald id
  portald status [--json]
  portald console [--admin ADDR|https://HOST:PORT] [--admin-ca FILE]
  portald name [NEW]
  portald peers add ID [--name N]
  portald peers ls [--name S] [--json]
  portald peers rm ID
  portald peers confirm ID
  portald apps add NAME --meta FILE --upstream URL --source IP [--source IP]...
  portald apps ls [--json]
  portald apps rm NAME
Client subcommands take --api ADDR (PORTAL_API, default 127.0.0.1:8480) and
act as the owner with the token in --data DIR (PORTAL_DATA) or --token-file FILE;
'portald console' asks the admin listener, --admin ADDR (PORTAL_ADMIN, default
127.0.0.1:8481; TLS unless loopback), for a one-time login link to the web
console, and prints the TLS certificate's fingerprint with it. 'portald name'
prints this Portal's name; 'portald name NEW' sets it, and the name set this
way wins over 'run --name' from then on.
Run 'portald COMMAND -h' for a command's flags.`

func main() {
	os.Exit(realMain(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// realMain runs the command line and returns the exit code.
func realMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cli.Exit("portald", usage, dispatch(ctx, args, stdout, stderr), stderr)
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return cli.Usagef("")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(ctx, rest, stderr)
	case "id":
		return cmdID(ctx, rest, stdout, stderr)
	case "status":
		return cmdStatus(ctx, rest, stdout, stderr)
	case "console":
		return cmdConsole(ctx, rest, stdout, stderr)
	case "name":
		return cmdName(ctx, rest, stdout, stderr)
	case "peers", "apps":
		if len(rest) == 0 {
			subs := "add, ls, rm"
			if cmd == "peers" {
				subs += ", confirm"
			}
			return cli.Usagef("%s: missing subcommand (%s)", cmd, subs)
		}
		sub := cmd + " " + rest[0]
		switch sub {
		case "peers add":
			return cmdPeersAdd(ctx, rest[1:], stdout, stderr)
		case "peers ls":
			return cmdPeersLs(ctx, rest[1:], stdout, stderr)
		case "peers rm":
			return cmdPeersRm(ctx, rest[1:], stdout, stderr)
		case "peers confirm":
			return cmdPeersConfirm(ctx, rest[1:], stdout, stderr)
		case "apps add":
			return cmdAppsAdd(ctx, rest[1:], stdout, stderr)
		case "apps ls":
			return cmdAppsLs(ctx, rest[1:], stdout, stderr)
		case "apps rm":
			return cmdAppsRm(ctx, rest[1:], stdout, stderr)
		}
		return cli.Usagef("unknown command %q", sub)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	return cli.Usagef("unknown command %q", cmd)
}
