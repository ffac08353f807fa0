// Package cli holds the command-line conventions portald and portal-relay
// share, so that both behave alike: every flag also has a PORTAL_*
// environment variable (a flag on the command line wins), flags may follow
// positional arguments, and the exit code is 0 for success, 1 for an error
// (one line on stderr) and 2 for a usage mistake. It imports nothing of ours.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// UsageError is a usage mistake: exit code 2.
type UsageError struct{ Msg string }

func (e UsageError) Error() string { return e.Msg }

// Usagef returns a UsageError; an empty message asks for the full usage.
func Usagef(format string, args ...any) error { return UsageError{fmt.Sprintf(format, args...)} }

// ErrHelp is returned when -h was asked for; the flags were printed.
var ErrHelp = errors.New("help requested")

// Exit reports err on stderr as prog's conventions say and returns the
// exit code: 0 for nil or ErrHelp, 2 for a UsageError (with the full usage
// when it has no message), 1 otherwise.
func Exit(prog, usage string, err error, stderr io.Writer) int {
	var ue UsageError
	switch {
	case err == nil, errors.Is(err, ErrHelp):
		return 0
	case errors.As(err, &ue):
		if ue.Msg == "" {
			fmt.Fprintln(stderr, usage)
		} else {
			fmt.Fprintf(stderr, "%s: %s (see '%s help')\n", prog, OneLine(ue.Msg), prog)
		}
		return 2
	default:
		fmt.Fprintf(stderr, "%s: %s\n", prog, OneLine(err.Error()))
		return 1
	}
}

// OneLine keeps a message to one line, as the exit-code contract promises.
func OneLine(s string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
}

// Command is one subcommand's flag set, with the PORTAL_* variable of each
// flag.
type Command struct {
	fs     *flag.FlagSet
	env    map[string]string // flag name → environment variable
	stderr io.Writer
}

// NewCommand returns an empty command; stderr receives -h output.
func NewCommand(name string, stderr io.Writer) *Command {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// The flag package's own error text and usage are silenced: a parse
	// error becomes a one-line UsageError, and -h prints the defaults.
	fs.SetOutput(io.Discard)
	return &Command{fs: fs, env: map[string]string{}, stderr: stderr}
}

// EnvName is the PORTAL_* variable of a flag: --call-timeout is
// PORTAL_CALL_TIMEOUT.
func EnvName(flagName string) string {
	return "PORTAL_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// String defines a string flag.
func (c *Command) String(name, def, help string) *string {
	c.env[name] = EnvName(name)
	return c.fs.String(name, def, help+" ("+EnvName(name)+")")
}

// Bool defines a boolean flag.
func (c *Command) Bool(name string, def bool, help string) *bool {
	c.env[name] = EnvName(name)
	return c.fs.Bool(name, def, help+" ("+EnvName(name)+")")
}

// Var defines a flag of any flag.Value; a *List is repeatable.
func (c *Command) Var(v flag.Value, name, help string) {
	c.env[name] = EnvName(name)
	c.fs.Var(v, name, help+" ("+EnvName(name)+")")
}

// IsSet reports whether the flag was given on the command line or in the
// environment.
func (c *Command) IsSet(name string) bool {
	set := false
	c.fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// Parse applies the environment, then the arguments, and returns exactly
// want positional arguments (else a UsageError). Flags may come before or
// after positionals ("peers add ID --name N"); "--" ends the flags.
func (c *Command) Parse(args []string, want int) ([]string, error) {
	return c.parse(args, want, want)
}

// ParseAtMost is Parse for a command whose positional arguments are
// optional: it returns up to n of them ("portald name [NEW]").
func (c *Command) ParseAtMost(args []string, n int) ([]string, error) {
	return c.parse(args, 0, n)
}

// parse is Parse, wanting from least to most positional arguments.
func (c *Command) parse(args []string, least, most int) ([]string, error) {
	for name, env := range c.env {
		v, ok := os.LookupEnv(env)
		if !ok {
			continue
		}
		values := []string{v}
		if _, multi := c.fs.Lookup(name).Value.(*List); multi {
			values = splitList(v)
		}
		for _, v := range values {
			if err := c.fs.Set(name, v); err != nil {
				return nil, Usagef("%s=%q: %v", env, v, err)
			}
		}
	}
	var positional []string
	for {
		if err := c.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(c.stderr, "usage of %s:\n", c.fs.Name())
				c.fs.SetOutput(c.stderr)
				c.fs.PrintDefaults()
				return nil, ErrHelp
			}
			return nil, Usagef("%s: %v", c.fs.Name(), err)
		}
		rest := c.fs.Args()
		if len(rest) == 0 {
			break
		}
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	switch {
	case len(positional) > most:
		return nil, Usagef("%s: unexpected argument %q", c.fs.Name(), positional[most])
	case len(positional) < least:
		return nil, Usagef("%s: want %d argument(s), got %d", c.fs.Name(), least, len(positional))
	}
	return positional, nil
}

// List is a repeatable flag; its environment variable is a comma-separated
// list.
type List []string

func (l *List) String() string { return strings.Join(*l, ",") }

// Set adds one value.
func (l *List) Set(v string) error {
	if v == "" {
		return fmt.Errorf("empty value")
	}
	*l = append(*l, v)
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
