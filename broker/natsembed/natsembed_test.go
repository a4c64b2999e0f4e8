package natsembed_test

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aperture-gov/aperture/broker/natsembed"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

func start(t *testing.T, opts natsembed.Options) *natsembed.Server {
	t.Helper()
	s, err := natsembed.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStartValidates(t *testing.T) {
	ca, err := mtls.OpenDevCA(t.TempDir(), "aperture.test")
	if err != nil {
		t.Fatal(err)
	}
	src, err := ca.Source(mtls.KindBroker, "")
	if err != nil {
		t.Fatal(err)
	}
	// A made-up agency: what is validated is the shape of ids and identities, not the registry.
	agency := natsembed.Agency{ID: "agency-a", Identity: mtls.ID("aperture.test", mtls.KindAgency, "agency-a")}
	tests := []struct {
		name string
		opts natsembed.Options
		want string
	}{
		{"no Dir", natsembed.Options{Port: -1}, "Dir"},
		{"agencies without TLS", natsembed.Options{Dir: t.TempDir(), Port: -1, Agencies: []natsembed.Agency{agency}}, "TLS is required"},
		{"agency id widens the subject", natsembed.Options{Dir: t.TempDir(), Port: -1, TLS: src,
			Agencies: []natsembed.Agency{{ID: "agency-a.*", Identity: agency.Identity}}}, "single subject token"},
		{"agency id is a wildcard", natsembed.Options{Dir: t.TempDir(), Port: -1, TLS: src,
			Agencies: []natsembed.Agency{{ID: ">", Identity: agency.Identity}}}, "single subject token"},
		{"authority identity as an agency", natsembed.Options{Dir: t.TempDir(), Port: -1, TLS: src,
			Agencies: []natsembed.Agency{{ID: "agency-a", Identity: mtls.ID("aperture.test", mtls.KindAuthority, "agency-a")}}}, "not an agency SPIFFE ID"},
		{"identity twice", natsembed.Options{Dir: t.TempDir(), Port: -1, TLS: src,
			Agencies: []natsembed.Agency{agency, {ID: "agency-b", Identity: agency.Identity}}}, "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := natsembed.Start(tt.opts)
			if err == nil {
				s.Shutdown()
				t.Fatalf("Start succeeded, want an error mentioning %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Start: %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

// TestRestartKeepsStream writes to a stream, restarts the server on the same Dir, port and broker
// key, and checks both that the messages survived and that the connection from before the restart
// (which was in-process) reconnected, over TCP (and TLS where the server has it), authenticated.
func TestRestartKeepsStream(t *testing.T) {
	ca, err := mtls.OpenDevCA(t.TempDir(), "aperture.test")
	if err != nil {
		t.Fatal(err)
	}
	src, err := ca.Source(mtls.KindBroker, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		tls    mtls.Source
		scheme string
	}{
		{"plain", nil, "nats://127.0.0.1:"},
		{"tls", src, "tls://127.0.0.1:"},
	} {
		t.Run(tt.name, func(t *testing.T) { testRestart(t, tt.tls, tt.scheme) })
	}
}

func testRestart(t *testing.T, tlsSrc mtls.Source, scheme string) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	dir := t.TempDir()
	key, err := natsembed.LoadOrCreateKey(filepath.Join(dir, "broker.nk"))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))

	opts := natsembed.Options{Dir: dir, Port: -1, Logger: logger, ServerName: "test", BrokerKey: key, TLS: tlsSrc}
	s := start(t, opts)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			s.Shutdown()
		}
	})
	if !strings.HasPrefix(s.ClientURL(), scheme) {
		t.Fatalf("ClientURL = %q, want %s…", s.ClientURL(), scheme)
	}
	reconnected := make(chan struct{}, 1)
	nc, err := s.Connect(nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("JetStream not available: %v", err)
	}
	if _, err := nc.TLSConnectionState(); err == nil {
		t.Error("the in-process connection speaks TLS: it costs CPU and protects nothing")
	}
	if !s.NATS().JetStreamConfig().SyncAlways {
		t.Fatal("JetStream does not fsync before acknowledging (SyncAlways off)")
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := js.Publish(ctx, "t.x", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}

	url := s.ClientURL()
	s.Shutdown()
	opts.Port = mustPort(t, url)
	s = start(t, opts)
	if s.ClientURL() != url {
		t.Fatalf("restarted on %s, want %s", s.ClientURL(), url)
	}
	select {
	case <-reconnected:
	case <-ctx.Done():
		t.Fatal("connection did not reconnect to the restarted server")
	}
	if _, err := nc.TLSConnectionState(); tlsSrc != nil && err != nil {
		t.Errorf("the reconnected TCP connection does not use TLS: %v", err)
	}

	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 10 {
		t.Fatalf("after restart the stream has %d messages, want 10", n)
	}
	m, err := st.GetMsg(ctx, 10)
	if err != nil || !bytes.Equal(m.Data, []byte{9}) {
		t.Fatalf("message 10 = %v, %v", m, err)
	}
	s.Shutdown()
	stopped = true
	if !strings.Contains(logs.String(), "JetStream") {
		t.Errorf("server logs did not reach slog: %q", logs.String())
	}
}

func mustPort(t *testing.T, url string) int {
	t.Helper()
	i := strings.LastIndexByte(url, ':')
	var p int
	for _, c := range url[i+1:] {
		p = p*10 + int(c-'0')
	}
	if p == 0 {
		t.Fatalf("no port in %q", url)
	}
	return p
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
