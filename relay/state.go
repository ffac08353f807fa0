package relay

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"portal/identity"
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

// stateRecord is one hold as a save snapshots it: 56 bytes against a
// hold's 96, and no pointers, so that a snapshot of a million holds is one
// allocation that the garbage collector does not scan.
type stateRecord struct {
	id    identity.ID
	until int64    // milliseconds since the Unix epoch, never negative
	src   [16]byte // as in the file: all zeros when unknown
}

func newStateRecord(id identity.ID, until time.Time, src netip.Addr) stateRecord {
	r := stateRecord{id: id, until: max(until.UnixMilli(), 0)}
	if src.IsValid() {
		r.src = src.As16()
	}
	return r
}

// writeState sorts recs by ID, in place, so that equal states give equal
// files, and writes them to w in the state file's format, hashing as it
// goes rather than encoding the whole file in memory first.
func writeState(w io.Writer, recs []stateRecord) error {
	slices.SortFunc(recs, func(a, b stateRecord) int { return bytes.Compare(a.id[:], b.id[:]) })
	sum := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, sum), 64<<10)
	var b [stateEntryLen]byte
	bw.WriteString(stateMagic)
	bw.Write(binary.BigEndian.AppendUint32(b[:0], uint32(len(recs))))
	for i := range recs {
		r := &recs[i]
		copy(b[:idLen], r.id[:])
		binary.BigEndian.PutUint64(b[idLen:], uint64(r.until))
		copy(b[idLen+timeLen:], r.src[:])
		bw.Write(b[:]) // bufio keeps the first error for Flush
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err := w.Write(sum.Sum(nil))
	return err
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

// saveState writes recs (sorting them in place) to path atomically: a
// temporary file in the same directory, written and synced, renamed over
// path, then the directory synced, so that a crash leaves either the old
// file or the new one.
func saveState(path string, recs []stateRecord) (err error) {
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
	if err = writeState(f, recs); err != nil {
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
