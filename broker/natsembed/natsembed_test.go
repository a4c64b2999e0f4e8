package natsembed_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aperture-gov/aperture/broker/natsembed"
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
	if _, err := natsembed.Start(natsembed.Options{Port: -1}); err == nil || !strings.Contains(err.Error(), "Dir") {
		t.Fatalf("Start without Dir: err = %v, want an error naming Dir", err)
	}
}

// TestRestartKeepsStream writes to a stream, restarts the server on the same Dir and port, and
// checks both that the messages survived and that the connection from before the restart (which
// was in-process) reconnected to the new server.
func TestRestartKeepsStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	dir := t.TempDir()
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))

	s := start(t, natsembed.Options{Dir: dir, Port: -1, Logger: logger, ServerName: "test"})
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			s.Shutdown()
		}
	})
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") {
		t.Fatalf("ClientURL = %q", s.ClientURL())
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
	port := mustPort(t, url)
	s.Shutdown()
	s = start(t, natsembed.Options{Dir: dir, Port: port, Logger: logger, ServerName: "test"})
	if s.ClientURL() != url {
		t.Fatalf("restarted on %s, want %s", s.ClientURL(), url)
	}
	select {
	case <-reconnected:
	case <-ctx.Done():
		t.Fatal("connection did not reconnect to the restarted server")
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
