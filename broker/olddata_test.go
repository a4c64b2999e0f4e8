package broker

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestRefuseUnauthenticatedStore(t *testing.T) {
	for _, tc := range []struct {
		name          string
		store, key    bool
		wantOldFormat bool
	}{
		{"fresh data directory", false, false, false},
		{"store written by this version", true, true, false},
		{"store written before stored state was authenticated", true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "nats")
			key := filepath.Join(dir, EmbeddedNATSKeyFile)
			if tc.store {
				if err := os.MkdirAll(filepath.Join(dir, "jetstream"), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			if tc.key {
				if err := os.WriteFile(key, []byte("SU…"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := refuseUnauthenticatedStore(dir, key)
			if got := errors.Is(err, ErrOldDataDir); got != tc.wantOldFormat {
				t.Fatalf("refuseUnauthenticatedStore: %v, want old format %v", err, tc.wantOldFormat)
			}
		})
	}
}
