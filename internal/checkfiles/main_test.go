package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// pe returns the start of a PE file: a DOS header whose e_lfanew points
// at the PE signature, as Go's linker writes it.
func pe() []byte {
	b := make([]byte, 0x100)
	copy(b, "MZ")
	binary.LittleEndian.PutUint32(b[0x3c:], 0x80)
	copy(b[0x80:], "PE\x00\x00")
	return b
}

func TestCheck(t *testing.T) {
	for _, tt := range []struct {
		name    string
		content []byte
		want    string // the problem's text after "name: ", "" for none
	}{
		{"main.go", []byte("package main\n"), ""},
		{"empty", nil, ""},
		{"elf", []byte("\x7fELF\x02\x01\x01\x00"), "a compiled binary (ELF)"},
		{"pe.exe", pe(), "a compiled binary (PE)"},
		{"mz.txt", append([]byte("MZ is not a PE file without its signature"), make([]byte, 0x100)...), ""},
		{"macho64", []byte{0xcf, 0xfa, 0xed, 0xfe, 0x0c, 0x00, 0x00, 0x01}, "a compiled binary (Mach-O)"},
		{"macho32", []byte{0xce, 0xfa, 0xed, 0xfe}, "a compiled binary (Mach-O)"},
		{"macho-be", []byte{0xfe, 0xed, 0xfa, 0xcf}, "a compiled binary (Mach-O)"},
		{"universal", []byte{0xca, 0xfe, 0xba, 0xbe}, "a compiled binary (Mach-O universal)"},
		{"short", []byte{0x7f}, ""},
		{"1MiB.txt", bytes.Repeat([]byte("a"), maxSize), ""},
		{"big.txt", bytes.Repeat([]byte("a"), maxSize+1), "1048577 bytes, over the 1 MiB limit"},
		{"dir/big-elf", append([]byte("\x7fELF"), make([]byte, maxSize)...), "a compiled binary (ELF)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			path := filepath.Join(root, filepath.FromSlash(tt.name))
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tt.content, 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := check(root, []string{tt.name})
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			if tt.want != "" {
				want = []string{tt.name + ": " + tt.want}
			}
			if !slices.Equal(got, want) {
				t.Errorf("check = %q, want %q", got, want)
			}
		})
	}
}

// TestCheckSkips: what git lists but the work tree has no regular file
// for has nothing to commit.
func TestCheckSkips(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "elf"), []byte("\x7fELF"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("elf", filepath.Join(root, "link")); err != nil {
		t.Skipf("no symbolic links here: %v", err)
	}
	got, err := check(root, []string{"deleted", "link", ""})
	if err != nil || len(got) != 0 {
		t.Errorf("check = %q, %v; want nothing", got, err)
	}
}

// TestCheckRealBinary runs the check on this test's own executable, a
// binary of the host's format.
func TestCheckRealBinary(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"linux": "ELF", "windows": "PE", "darwin": "Mach-O"}[runtime.GOOS]
	if want == "" {
		t.Skipf("no executable format known for %s", runtime.GOOS)
	}
	got, err := check(filepath.Dir(exe), []string{filepath.Base(exe)})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !strings.HasSuffix(got[0], "a compiled binary ("+want+")") {
		t.Errorf("check(%s) = %q, want it named a compiled binary (%s)", exe, got, want)
	}
}
