// Command checkfiles fails when a file git tracks is a compiled binary
// (ELF, PE or Mach-O) or larger than 1 MiB: only source goes into the
// repository, and built binaries live in bin/, which is ignored. `make
// lint` and `make test` run it from the repository's root:
//
//	go run ./internal/checkfiles
//
// It prints one line per offending file and exits 1, or exits 2 when it
// cannot list or read the tracked files.
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// maxSize is the largest tracked file allowed: source is small, and a
// larger file is a build product, a capture or a data set that belongs
// elsewhere.
const maxSize = 1 << 20

func main() {
	out, err := exec.Command("git", "ls-files", "-z").Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "checkfiles: list the tracked files (git ls-files): %v\n", err)
		os.Exit(2)
	}
	files := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	problems, err := check(".", files)
	if err != nil {
		fmt.Fprintf(os.Stderr, "checkfiles: %v\n", err)
		os.Exit(2)
	}
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, p)
	}
	if len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "checkfiles: %d tracked file(s) must not be in the repository: build into bin/ (ignored) and git rm --cached them\n", len(problems))
		os.Exit(1)
	}
}

// check returns a line for each of files (slash-separated paths under
// root) that is a compiled binary or over maxSize. Paths that are not
// regular files (deleted from the work tree, symbolic links, submodules)
// are skipped: there is nothing of theirs to commit.
func check(root string, files []string) ([]string, error) {
	var problems []string
	for _, name := range files {
		if name == "" {
			continue
		}
		path := filepath.Join(root, filepath.FromSlash(name))
		fi, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		kind, err := binaryKind(path)
		switch {
		case err != nil:
			return nil, err
		case kind != "":
			problems = append(problems, fmt.Sprintf("%s: a compiled binary (%s)", name, kind))
		case fi.Size() > maxSize:
			problems = append(problems, fmt.Sprintf("%s: %d bytes, over the 1 MiB limit", name, fi.Size()))
		}
	}
	return problems, nil
}

// binaryKind names the executable format of the file at path from its
// magic bytes, or returns "" for any other file.
func binaryKind(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// Enough for the DOS header and the PE signature it points to.
	head := make([]byte, 4096)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, []byte("\x7fELF")):
		return "ELF", nil
	case isPE(head):
		return "PE", nil
	}
	if len(head) >= 4 {
		switch binary.BigEndian.Uint32(head) {
		case 0xfeedface, 0xfeedfacf, 0xcefaedfe, 0xcffaedfe:
			return "Mach-O", nil
		case 0xcafebabe:
			return "Mach-O universal", nil
		}
	}
	return "", nil
}

// isPE reports whether head starts a PE file: a DOS "MZ" header whose
// e_lfanew (offset 0x3c) points at "PE\0\0". The signature is checked too
// so that a text file that happens to start with "MZ" passes.
func isPE(head []byte) bool {
	if len(head) < 0x40 || !bytes.HasPrefix(head, []byte("MZ")) {
		return false
	}
	off := int(binary.LittleEndian.Uint32(head[0x3c:]))
	return off >= 0x40 && off+4 <= len(head) && string(head[off:off+4]) == "PE\x00\x00"
}
