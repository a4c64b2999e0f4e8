package main

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/aperture-gov/aperture/broker/tlog"
)

// TestPublicLogMounted: the portal serves the public log at /log/, and so does the standalone
// server `aperture broker --log-listen` starts; the checkpoint verifies with the published key.
func TestPublicLogMounted(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) {
		o.PortalListen, o.CitizenListen = "127.0.0.1:0", "127.0.0.1:0"
	})
	ts.releaseN(2)
	ts.waitSigned(2)
	vk, err := os.ReadFile(filepath.Join(ts.dataDir, "keys", tlog.VerifierKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(vk)))
	if err != nil {
		t.Fatal(err)
	}
	ls, err := listenLog("127.0.0.1:0", ts.Broker.PublicLog(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ls.Close)
	for name, base := range map[string]string{"portal": ts.Portal.base, "--log-listen": "http://" + ls.Addr().String()} {
		t.Run(name, func(t *testing.T) {
			get := func(path string) []byte {
				t.Helper()
				resp, err := http.Get(base + path)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("GET %s: %s %s", path, resp.Status, b)
				}
				return b
			}
			cp, _, _, err := log.ParseCheckpoint(get("/log/checkpoint"), v.Name(), v)
			if err != nil || cp.Size < 2 {
				t.Fatalf("checkpoint: %v %+v", err, cp)
			}
			if tile := get("/log/tile/0/000.p/2"); len(tile) != 64 {
				t.Fatalf("tile: %d bytes", len(tile))
			}
		})
	}
}
