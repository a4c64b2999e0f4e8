package sealedkv_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/keys/keystest"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
	"github.com/aperture-gov/aperture/broker/sealedkv"
)

type record struct {
	Step string `json:"step"`
}

// lines collects log output from any goroutine.
type lines struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lines) take() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.b.String()
	l.b.Reset()
	return s
}

type fixture struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	codec  *sealedkv.Codec
	key    keys.Sealer
	logged *lines
}

func newFixture(t *testing.T, bucket string) fixture {
	t.Helper()
	ctx := context.Background()
	js := natstest.JetStream(t)
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 8})
	if err != nil {
		t.Fatal(err)
	}
	f := fixture{js: js, kv: kv, key: keystest.Sealer(t), logged: &lines{}}
	f.codec, err = sealedkv.New(ctx, js, bucket, f.key, slog.New(slog.NewTextHandler(f.logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f fixture) put(t *testing.T, key string, v []byte) jetstream.KeyValueEntry {
	t.Helper()
	if _, err := f.kv.Put(context.Background(), key, v); err != nil {
		t.Fatal(err)
	}
	return f.get(t, key)
}

func (f fixture) get(t *testing.T, key string) jetstream.KeyValueEntry {
	t.Helper()
	e, err := f.kv.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestOpen: a record reads back only from the key it was written to by the codec, as the latest
// write after the revision it names; everything else is ErrUnauthentic, logged and counted.
func TestOpen(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		// entry writes into the bucket and returns the entry to open.
		entry  func(t *testing.T, f fixture) jetstream.KeyValueEntry
		reason string // "" for a record that opens
	}{
		{"written by the codec", func(t *testing.T, f fixture) jetstream.KeyValueEntry {
			write(t, f, "p.j.s", 0, "s")
			return f.get(t, "p.j.s")
		}, ""},
		{"the latest of several writes", func(t *testing.T, f fixture) jetstream.KeyValueEntry {
			rev := write(t, f, "p.j.s", 0, "a")
			write(t, f, "other", 0, "x") // another key's writes in between do not matter
			rev = write(t, f, "p.j.s", rev, "b")
			write(t, f, "p.j.s", rev, "s")
			return f.get(t, "p.j.s")
		}, ""},
		{"copied to another key", func(t *testing.T, f fixture) jetstream.KeyValueEntry {
			write(t, f, "p.j.s", 0, "s")
			return f.put(t, "q.j.s", f.get(t, "p.j.s").Value())
		}, "does not open"},
		{"sealed for another bucket", func(t *testing.T, f fixture) jetstream.KeyValueEntry {
			kv, err := f.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "cases"})
			if err != nil {
				t.Fatal(err)
			}
			other, err := sealedkv.New(ctx, f.js, "cases", f.key, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := other.Write(ctx, kv, "p.j.s", 0, record{Step: "s"}); err != nil {
				t.Fatal(err)
			}
			e, err := kv.Get(ctx, "p.j.s")
			if err != nil {
				t.Fatal(err)
			}
			return f.put(t, "p.j.s", e.Value())
		}, "does not open"},
		{"sealed with another data key", func(t *testing.T, f fixture) jetstream.KeyValueEntry {
			foreign, err := keystest.Sealer(t).Seal([]byte(`{"prev":0,"record":{"step":"s"}}`), []byte("aperture/kv/consents/p.j.s"))
			if err != nil {
				t.Fatal(err)
			}
			return f.put(t, "p.j.s", foreign)
		}, "does not open"},
		{"plain JSON", func(t *testing.T, f fixture) jetstream.KeyValueEntry {
			return f.put(t, "p.j.s", []byte(`{"step":"s"}`))
		}, "is not sealed"},
		{"truncated", func(t *testing.T, f fixture) jetstream.KeyValueEntry {
			write(t, f, "p.j.s", 0, "s")
			v := f.get(t, "p.j.s").Value()
			return f.put(t, "p.j.s", v[:len(v)-1])
		}, "does not open"},
		{"empty", func(t *testing.T, f fixture) jetstream.KeyValueEntry { return f.put(t, "p.j.s", nil) }, "does not open"},
		{"an earlier record written back (revocation undone)", func(t *testing.T, f fixture) jetstream.KeyValueEntry {
			rev := write(t, f, "p.j.s", 0, "s")
			granted := f.get(t, "p.j.s").Value()
			write(t, f, "p.j.s", rev, "revoked")
			return f.put(t, "p.j.s", granted)
		}, "written back"},
		{"the latest record written again", func(t *testing.T, f fixture) jetstream.KeyValueEntry {
			write(t, f, "p.j.s", 0, "s")
			return f.put(t, "p.j.s", f.get(t, "p.j.s").Value())
		}, "written back"},
		{"an earlier record written back after the key was deleted", func(t *testing.T, f fixture) jetstream.KeyValueEntry {
			write(t, f, "p.j.s", 0, "s")
			first := f.get(t, "p.j.s").Value()
			if err := f.kv.Purge(ctx, "p.j.s"); err != nil {
				t.Fatal(err)
			}
			return f.put(t, "p.j.s", first)
		}, "written back"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "consents")
			e := tc.entry(t, f)
			f.logged.take()
			before := f.codec.Unauthentic()
			var got record
			err := f.codec.Open(ctx, e, "j/s", &got)
			if tc.reason == "" {
				if err != nil || got.Step != "s" || f.codec.Unauthentic() != before {
					t.Fatalf("Open = %v, %+v, counter %d→%d", err, got, before, f.codec.Unauthentic())
				}
				return
			}
			if !errors.Is(err, sealedkv.ErrUnauthentic) || got.Step != "" {
				t.Fatalf("Open = %v, %+v; want ErrUnauthentic and nothing decoded", err, got)
			}
			if f.codec.Unauthentic() != before+1 {
				t.Fatalf("counter %d→%d, want one more", before, f.codec.Unauthentic())
			}
			if l := f.logged.take(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "bucket=consents") ||
				!strings.Contains(l, "record=j/s") || !strings.Contains(l, tc.reason) || strings.Contains(l, "p.j.s") {
				t.Fatalf("log line %q", l)
			}
		})
	}
}

func write(t *testing.T, f fixture, key string, prev uint64, step string) uint64 {
	t.Helper()
	rev, err := f.codec.Write(context.Background(), f.kv, key, prev, record{Step: step})
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// TestWriteIsCompareAndSet: a write names the revision it replaces and fails, changing nothing, when
// that is not the latest; Latest finds the revision to replace, also over a record that does not
// authenticate or a delete marker.
func TestWriteIsCompareAndSet(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "consents")
	if rev, err := f.codec.Latest(ctx, "k"); err != nil || rev != 0 {
		t.Fatalf("Latest of a new key = %d, %v", rev, err)
	}
	rev := write(t, f, "k", 0, "a")
	if _, err := f.codec.Write(ctx, f.kv, "k", 0, record{Step: "b"}); !sealedkv.IsConflict(err) {
		t.Fatalf("create over an existing key: %v", err)
	}
	stale := rev
	write(t, f, "k", rev, "b")
	if _, err := f.codec.Write(ctx, f.kv, "k", stale, record{Step: "c"}); !sealedkv.IsConflict(err) {
		t.Fatalf("write over a stale revision: %v", err)
	}
	forged := f.put(t, "k", []byte(`{"step":"forged"}`))
	if latest, err := f.codec.Latest(ctx, "k"); err != nil || latest != forged.Revision() {
		t.Fatalf("Latest = %d, %v; want the forged record's %d", latest, err, forged.Revision())
	}
	if err := f.kv.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	latest, err := f.codec.Latest(ctx, "k")
	if err != nil || latest <= forged.Revision() {
		t.Fatalf("Latest after a delete = %d, %v", latest, err)
	}
	write(t, f, "k", latest, "d")
	var got record
	if err := f.codec.Open(ctx, f.get(t, "k"), "k", &got); err != nil || got.Step != "d" {
		t.Fatalf("a write over a delete marker reads %+v, %v", got, err)
	}
	if _, err := sealedkv.New(ctx, f.js, "consents", nil, nil); err == nil {
		t.Fatal("a codec without a sealing key was made")
	}
	if _, err := sealedkv.New(ctx, f.js, "no-such-bucket", f.key, nil); err == nil {
		t.Fatal("a codec for a bucket that does not exist was made")
	}
}
