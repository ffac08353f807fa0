package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/windows"
)

// privateFiles does nothing: Windows has no umask. New files take the
// data directory's access list, which under the user's profile (as the
// default data directory is) is the user's own.
func privateFiles() {}

// lockDataDir takes an exclusive lock on the data directory, so that two
// daemons never share one identity and one database. Windows releases it
// when the file is closed or the process ends, as flock does on Unix.
func lockDataDir(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	err = windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, new(windows.Overlapped))
	if err != nil {
		f.Close()
		if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
			return nil, fmt.Errorf("data directory %s is in use by another portald", filepath.Dir(path))
		}
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	return func() { f.Close() }, nil
}
