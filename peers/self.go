package peers

import "fmt"

// MaxSelfNameBytes is the longest name this Portal may give itself, in
// bytes of UTF-8: the most a relay record carries (relay.ClientConfig.Name),
// so that the name peers learn from the relays is the name the owner set,
// never a cut one.
const MaxSelfNameBytes = 64

// ValidateSelfName checks a name for this Portal itself: a valid peer name
// (ValidateName) that also fits in MaxSelfNameBytes, the stricter of the
// two limits wherever they differ (64 characters may take up to 256
// bytes). The empty name means "no name", as for peers.
func ValidateSelfName(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if len(name) > MaxSelfNameBytes {
		return fmt.Errorf("peers: name takes %d bytes in UTF-8, at most %d allowed (what a relay record carries): %w", len(name), MaxSelfNameBytes, ErrInvalid)
	}
	return nil
}
