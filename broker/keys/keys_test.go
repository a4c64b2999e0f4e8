package keys_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/aperture-gov/aperture/broker/keys"
)

var (
	hex32   = regexp.MustCompile(`^[0-9a-f]{32}$`)
	keyIDRe = regexp.MustCompile(`^local:[0-9a-f]{8}$`)
)

func open(t *testing.T, dir string) *keys.Local {
	t.Helper()
	l, err := keys.OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLocalCreatesKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys") // does not exist yet
	l := open(t, dir)
	fi, err := os.Stat(filepath.Join(dir, keys.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %#o, want 0600", fi.Mode().Perm())
	}
	if fi.Size() != 32 {
		t.Errorf("key file has %d bytes, want 32", fi.Size())
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, "*.tmp*")); len(leftovers) > 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}
	if !keyIDRe.MatchString(l.KeyID()) {
		t.Errorf("KeyID = %q", l.KeyID())
	}
}

// TestLocalPseudonym checks the pseudonym against HMAC-SHA256 computed here from the key file, and
// that the key id is derived from the key.
func TestLocalPseudonym(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir)
	key, err := os.ReadFile(filepath.Join(dir, keys.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(key)
	wantKeyID := "local:" + hex.EncodeToString(sum[:4])

	for _, id := range []string{"0101901234", "3112991234", ""} {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id))
		want := hex.EncodeToString(mac.Sum(nil)[:16])
		got := l.Pseudonym(id)
		if got.Value != want || got.KeyID != wantKeyID {
			t.Errorf("Pseudonym(%q) = %+v, want {%s %s}", id, got, want, wantKeyID)
		}
		if !hex32.MatchString(got.Value) {
			t.Errorf("Pseudonym(%q).Value = %q, not 32 lowercase hex", id, got.Value)
		}
	}
}

func TestLocalStableAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir).Pseudonym("0101901234")
	b := open(t, dir).Pseudonym("0101901234")
	if a != b {
		t.Fatalf("pseudonym changed across reopen: %+v then %+v", a, b)
	}
}

func TestLocalDifferentKeys(t *testing.T) {
	a, b := open(t, t.TempDir()), open(t, t.TempDir())
	pa, pb := a.Pseudonym("0101901234"), b.Pseudonym("0101901234")
	if pa.Value == pb.Value || pa.KeyID == pb.KeyID {
		t.Fatalf("two keys gave %+v and %+v", pa, pb)
	}
	if a.Pseudonym("0101901234") == a.Pseudonym("0101901235") {
		t.Fatal("two citizens share a pseudonym")
	}
}

func TestLocalRejectsBadKeyFile(t *testing.T) {
	tests := []struct {
		name    string
		content []byte
		mode    os.FileMode
		wantErr string
	}{
		{"readable by others", make([]byte, 32), 0o644, "chmod 600"},
		{"group readable", make([]byte, 32), 0o640, "chmod 600"},
		{"too short", make([]byte, 16), 0o600, "has 16 bytes, want 32"},
		{"too long", make([]byte, 33), 0o600, "has 33 bytes, want 32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, keys.KeyFile)
			if err := os.WriteFile(path, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			_, err := keys.OpenLocal(dir)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("OpenLocal: err = %v, want it to contain %q", err, tt.wantErr)
			}
			// A bad key is reported, never replaced: replacing it would orphan every pseudonym.
			if got, _ := os.ReadFile(path); len(got) != len(tt.content) {
				t.Fatal("the key file was changed")
			}
		})
	}
}

func TestLocalConcurrent(t *testing.T) {
	l := open(t, t.TempDir())
	want := l.Pseudonym("0101901234")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if got := l.Pseudonym("0101901234"); got != want {
					t.Errorf("concurrent Pseudonym = %+v, want %+v", got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkPseudonym(b *testing.B) {
	l, err := keys.OpenLocal(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Pseudonym("0101901234")
		}
	})
}
