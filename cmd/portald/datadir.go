package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

// secureDataDir creates the data directory if needed and makes it and
// everything in it private to the daemon's user: the directory and its
// subdirectories 0700, its files 0600. The directory holds the identity
// key, the owner token and the database; a backup restored with loose
// permissions must not stay readable by other users. identity.key and
// admin.key are left as they are: a key that others could read may have
// leaked, and loading it refuses to start with the reason, so the owner
// decides. Symbolic links are not followed. Failing to tighten anything
// fails start-up.
func secureDataDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	// The directory itself may be a symbolic link the owner made; its
	// target is what must be private.
	info, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if !info.IsDir() {
		return fmt.Errorf("data directory %s is not a directory", dir)
	}
	// A directory anyone may write to (/tmp, with its sticky bit) is a
	// shared one: neither a place for the Portal's secrets nor one to
	// take away from its other users.
	if info.Mode()&os.ModeSticky != 0 || info.Mode().Perm()&0o002 != 0 {
		return fmt.Errorf("data directory %s is shared (mode %v): give portald a directory of its own", dir, info.Mode())
	}
	if err := tighten(dir, info, 0o700, log); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		info, err := e.Info()
		if err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
		switch {
		case e.Name() == keyFile, e.Name() == adminKeyFile:
			// identity.LoadKey and readPrivateFile judge them.
		case e.IsDir():
			if err := tighten(path, info, 0o700, log); err != nil {
				return err
			}
		case e.Type().IsRegular():
			if err := tighten(path, info, 0o600, log); err != nil {
				return err
			}
		default:
			log.Warn("data directory: left alone, not a regular file or directory", "path", path, "type", e.Type().String())
		}
	}
	return nil
}

// tighten sets the permissions of path, described by info, to want when
// they are anything else, and says so in the log.
func tighten(path string, info os.FileInfo, want os.FileMode, log *slog.Logger) error {
	if info.Mode().Perm() == want {
		return nil
	}
	if err := os.Chmod(path, want); err != nil {
		return fmt.Errorf("data directory: cannot restrict %s to mode %#o (it is %#o): %w", path, want, info.Mode().Perm(), err)
	}
	log.Warn("data directory: tightened permissions", "path", path, "was", fmt.Sprintf("%#o", info.Mode().Perm()), "now", fmt.Sprintf("%#o", want))
	return nil
}
