package relay

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// The state file (ServerConfig.StateFile) keeps the relay's holds across
// restarts. Its layout, integers big-endian:
//
//	[0:8]   stateMagic "PTLHOLD1"
//	[8:12]  count
//	count × 56 bytes, in ID order:
//	        id[32]    a Portal ID
//	        until[8]  when its hold ends, milliseconds since the Unix epoch
//	        source[16] the source its last registration came from, as a
//	                  16-byte address (IPv4 mapped); all zeros when unknown
//	[..+32] SHA-256 of every byte before it
//
// The checksum catches a truncated or damaged file; the relay refuses to
// start on one rather than forget its holds silently.

const (
	stateMagic    = "PTLHOLD1"
	stateEntryLen = idLen + timeLen + 16
	stateHeadLen  = len(stateMagic) + 4
)

// errBadState is wrapped by parseState for every defect of a state file.
var errBadState = errors.New("corrupt state file")

// appendState encodes holds after dst, sorted by ID so that equal states
// give equal files.
func appendState(dst []byte, holds []hold) []byte {
	holds = slices.Clone(holds)
	slices.SortFunc(holds, func(a, b hold) int { return bytes.Compare(a.id[:], b.id[:]) })
	start := len(dst)
	dst = append(dst, stateMagic...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(holds)))
	for _, h := range holds {
		dst = append(dst, h.id[:]...)
		dst = appendTime(dst, h.until)
		var src [16]byte
		if h.src.IsValid() {
			src = h.src.As16()
		}
		dst = append(dst, src[:]...)
	}
	sum := sha256.Sum256(dst[start:])
	return append(dst, sum[:]...)
}

// parseState decodes a state file. Errors wrap errBadState.
func parseState(b []byte) ([]hold, error) {
	if len(b) < stateHeadLen+sha256.Size || string(b[:len(stateMagic)]) != stateMagic {
		return nil, fmt.Errorf("%w: not a portal-relay state file", errBadState)
	}
	n := uint64(binary.BigEndian.Uint32(b[len(stateMagic):]))
	if want := uint64(stateHeadLen) + n*stateEntryLen + sha256.Size; uint64(len(b)) != want {
		return nil, fmt.Errorf("%w: %d bytes for %d holds, want %d", errBadState, len(b), n, want)
	}
	body := b[:len(b)-sha256.Size]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], b[len(body):]) {
		return nil, fmt.Errorf("%w: checksum mismatch", errBadState)
	}
	holds := make([]hold, 0, n)
	for r := body[stateHeadLen:]; len(r) > 0; r = r[stateEntryLen:] {
		var h hold
		copy(h.id[:], r[:idLen])
		if len(holds) > 0 && bytes.Compare(holds[len(holds)-1].id[:], h.id[:]) >= 0 {
			return nil, fmt.Errorf("%w: IDs out of order or repeated", errBadState)
		}
		ms := binary.BigEndian.Uint64(r[idLen:])
		if ms > 1<<62 {
			return nil, fmt.Errorf("%w: hold of %s ends at an impossible time", errBadState, h.id.Short())
		}
		h.until = time.UnixMilli(int64(ms))
		src := [16]byte(r[idLen+timeLen : stateEntryLen])
		if src != [16]byte{} {
			h.src = sourceKey(netip.AddrFrom16(src))
		}
		h.idStr = h.id.String()
		holds = append(holds, h)
	}
	return holds, nil
}

// loadState reads the holds in path. A file that does not exist is no
// holds (a first start); any other failure is an error.
func loadState(path string) ([]hold, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("relay: load state: %w", err)
	}
	holds, err := parseState(b)
	if err != nil {
		return nil, true, fmt.Errorf("relay: load state %s: %w", path, err)
	}
	return holds, true, nil
}

// saveState writes holds to path atomically: a temporary file in the same
// directory, written and synced, renamed over path, then the directory
// synced, so that a crash leaves either the old file or the new one.
func saveState(path string, holds []hold) (err error) {
	b := appendState(nil, holds)
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("relay: save state: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(b); err != nil {
		return fmt.Errorf("relay: save state: %w", err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("relay: save state: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("relay: save state: %w", err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("relay: save state: %w", err)
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync() // the rename itself; best effort where directories cannot sync
		d.Close()
	}
	return nil
}
