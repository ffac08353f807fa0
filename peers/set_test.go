package peers

import (
	"errors"
	"testing"

	"portal/identity"
)

func TestSetLookup(t *testing.T) {
	key := func() identity.ID {
		k, err := identity.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		return k.ID()
	}
	bob, carol := key(), key()
	set := NewSet([]Peer{
		{ID: carol.String(), Key: carol, Verified: true},
		{ID: "qqqqqqqq"}, // stored by prefix, key unknown
		{ID: "qqqqqqrr"},
		{ID: bob.String(), Key: bob, Verified: true},
	})
	tests := []struct {
		query   string
		want    string // ID of the peer found
		wantErr error
	}{
		{bob.String(), bob.String(), nil},
		{bob.Short(), bob.String(), nil},
		{"qqqqqqqq", "qqqqqqqq", nil},
		{"qqqqqqqqzz", "qqqqqqqq", nil}, // a longer query names the stored prefix
		{"qqqqqq", "", ErrAmbiguous},
		{"qqqqq", "", ErrInvalid},
		{"zzzzzzzz", "", ErrNotFound},
	}
	for _, tt := range tests {
		p, err := set.Lookup(tt.query)
		if !errors.Is(err, tt.wantErr) || p.ID != tt.want {
			t.Errorf("Lookup(%q) = %q, %v; want %q, %v", tt.query, p.ID, err, tt.want, tt.wantErr)
		}
	}
	if all := set.All(); len(all) != 4 || all[0].ID > all[1].ID || all[1].ID > all[2].ID || all[2].ID > all[3].ID {
		t.Errorf("All() is not the 4 peers ordered by ID: %v", all)
	}
}
