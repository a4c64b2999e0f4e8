package mtls

import (
	"testing"
	"time"
)

func TestDevSourceRenewsNearExpiry(t *testing.T) {
	ca, err := OpenDevCA(t.TempDir(), "aperture.test")
	if err != nil {
		t.Fatal(err)
	}
	src, err := ca.Source(KindAuthority, "tax")
	if err != nil {
		t.Fatal(err)
	}
	first, err := src.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		offset  time.Duration
		renewed bool
	}{
		{"more than a day left", devLeafLifetime - 2*devLeafRenewBefore, false},
		{"less than a day left", devLeafLifetime - devLeafRenewBefore + time.Hour, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca.now = func() time.Time { return time.Now().Add(tt.offset) }
			got, err := src.GetCertificate(nil)
			if err != nil {
				t.Fatal(err)
			}
			if renewed := got.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0; renewed != tt.renewed {
				t.Fatalf("renewed = %v, want %v", renewed, tt.renewed)
			}
		})
	}
}
