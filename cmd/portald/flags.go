package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// errHelp is returned when -h was asked for; the usage has been printed.
var errHelp = errors.New("help requested")

// command is one subcommand's flag set, with the PORTAL_* variable of each
// flag.
type command struct {
	fs     *flag.FlagSet
	env    map[string]string // flag name → environment variable
	stderr io.Writer
}

func newCommand(name string, stderr io.Writer) *command {
	fs := flag.NewFlagSet("portald "+name, flag.ContinueOnError)
	// The flag package's own error text and usage are silenced: a parse
	// error becomes our one-line usage error, and -h prints the defaults.
	fs.SetOutput(io.Discard)
	return &command{fs: fs, env: map[string]string{}, stderr: stderr}
}

// envName is the PORTAL_* variable of a flag: --call-timeout is
// PORTAL_CALL_TIMEOUT.
func envName(flagName string) string {
	return "PORTAL_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (c *command) String(name, def, help string) *string {
	c.env[name] = envName(name)
	return c.fs.String(name, def, help+" ("+envName(name)+")")
}

func (c *command) Bool(name string, def bool, help string) *bool {
	c.env[name] = envName(name)
	return c.fs.Bool(name, def, help+" ("+envName(name)+")")
}

func (c *command) Var(v flag.Value, name, help string) {
	c.env[name] = envName(name)
	c.fs.Var(v, name, help+" ("+envName(name)+")")
}

// isSet reports whether the flag was given on the command line or in the
// environment.
func (c *command) isSet(name string) bool {
	set := false
	c.fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// apiFlag adds the --api flag every client subcommand has.
func (c *command) apiFlag() *string {
	return c.String("api", defaultAPI, "address of the daemon's internal API")
}

// parse applies the environment, then the arguments, and returns the
// positional arguments. Flags may come before or after positionals
// ("peers add ID --name N"); "--" ends the flags.
func (c *command) parse(args []string, wantPositional int) ([]string, error) {
	for name, env := range c.env {
		v, ok := os.LookupEnv(env)
		if !ok {
			continue
		}
		values := []string{v}
		if _, multi := c.fs.Lookup(name).Value.(*listFlag); multi {
			values = splitList(v)
		}
		for _, v := range values {
			if err := c.fs.Set(name, v); err != nil {
				return nil, usagef("%s=%q: %v", env, v, err)
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
				return nil, errHelp
			}
			return nil, usagef("%s: %v", c.fs.Name(), err)
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
	if len(positional) != wantPositional {
		return nil, usagef("%s: want %d argument(s), got %d", c.fs.Name(), wantPositional, len(positional))
	}
	return positional, nil
}

// listFlag is a repeatable flag; its environment variable is a
// comma-separated list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
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
