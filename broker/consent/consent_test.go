package consent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aperture-gov/aperture/broker/consent"
	"github.com/aperture-gov/aperture/broker/keys/keystest"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
	"github.com/aperture-gov/aperture/broker/sealedkv"
)

// logBuffer collects log lines written from any goroutine.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type env struct {
	s   *consent.Store
	kv  jetstream.KeyValue
	log *logBuffer
}

func open(t *testing.T) env {
	t.Helper()
	ctx := context.Background()
	js := natstest.JetStream(t)
	lb := &logBuffer{}
	s, err := consent.Open(ctx, js, consent.Options{Sealer: keystest.Sealer(t), Logger: slog.New(slog.NewJSONHandler(lb, nil))})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, consent.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	return env{s: s, kv: kv, log: lb}
}

const (
	p, j, step = "0123456789abcdef0123456789abcdef", "sickness-benefit", "assess-work-capacity"
	maxDays    = 90
)

var now = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

func TestGrantRevokeExpire(t *testing.T) {
	e := open(t)
	s := e.s
	ctx := context.Background()

	if _, err := s.Get(ctx, p, j, step); !errors.Is(err, consent.ErrNotFound) {
		t.Fatalf("no consent yet: %v", err)
	}
	if _, err := s.Revoke(ctx, p, j, step, now); !errors.Is(err, consent.ErrNotFound) {
		t.Fatalf("revoke of nothing: %v", err)
	}
	if _, err := s.Grant(ctx, p, j, step, now, 0); err == nil {
		t.Fatal("grant with no validity succeeded")
	}
	c, err := s.Grant(ctx, p, j, step, now, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		at   time.Time
		want bool
	}{
		{now.Add(-time.Second), false},
		{now, true},
		{now.Add(29 * 24 * time.Hour), true},
		{now.Add(30 * 24 * time.Hour), false},
	} {
		if got := c.ValidAt(tc.at, maxDays); got != tc.want {
			t.Errorf("ValidAt(%v) = %v, want %v", tc.at, got, tc.want)
		}
	}
	if _, err := s.Revoke(ctx, p, j, step, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, p, j, step)
	if err != nil {
		t.Fatal(err)
	}
	if got.ValidAt(now.Add(2*time.Hour), maxDays) || got.RevokedAt == nil {
		t.Fatalf("revoked consent still valid: %+v", got)
	}
	// Another citizen's consents are not listed.
	if _, err := s.Grant(ctx, "ffffffffffffffffffffffffffffffff", j, step, now, time.Hour); err != nil {
		t.Fatal(err)
	}
	list, err := s.List(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Pseudonym != p {
		t.Fatalf("list = %+v", list)
	}
	empty, err := s.List(ctx, "00000000000000000000000000000000")
	if err != nil || len(empty) != 0 {
		t.Fatalf("list of a citizen with no consents: %v, %v", empty, err)
	}
	if n := s.Unauthentic(); n != 0 {
		t.Fatalf("%d unauthentic reads of the store's own records", n)
	}
}

// TestStoredSealed: what is stored is not the consent in the clear.
func TestStoredSealed(t *testing.T) {
	e := open(t)
	ctx := context.Background()
	if _, err := e.s.Grant(ctx, p, j, step, now, time.Hour); err != nil {
		t.Fatal(err)
	}
	raw, err := e.kv.Get(ctx, p+"."+j+"."+step)
	if err != nil {
		t.Fatal(err)
	}
	if v := string(raw.Value()); strings.Contains(v, "granted_at") || strings.Contains(v, p) || strings.Contains(v, j) {
		t.Fatalf("stored consent is readable: %q", v)
	}
}

// TestWithinMax: the duration is checked against the step's current maximum whenever the consent is
// read for a decision, however it got into the store.
func TestWithinMax(t *testing.T) {
	day := 24 * time.Hour
	for _, tc := range []struct {
		name     string
		validity time.Duration
		maxDays  int
		at       time.Time
		want     bool
	}{
		{"within the maximum", 30 * day, 90, now.Add(day), true},
		{"exactly the maximum", 90 * day, 90, now.Add(day), true},
		{"a second over the maximum", 90*day + time.Second, 90, now.Add(day), false},
		{"365 days where 90 are allowed", 365 * day, 90, now.Add(day), false},
		{"the maximum was lowered since the grant", 90 * day, 30, now.Add(day), false},
		{"the step no longer takes consent", 30 * day, 0, now.Add(day), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &consent.Consent{Pseudonym: p, Journey: j, Step: step, GrantedAt: now, ExpiresAt: now.Add(tc.validity)}
			if got := c.WithinMax(tc.maxDays); got != tc.want {
				t.Errorf("WithinMax(%d) = %v, want %v", tc.maxDays, got, tc.want)
			}
			if got := c.ValidAt(tc.at, tc.maxDays); got != tc.want {
				t.Errorf("ValidAt(%d) = %v, want %v", tc.maxDays, got, tc.want)
			}
		})
	}
}

// TestUnauthenticReadsAsAbsent is the attack of issue 10: a client with write access to NATS puts a
// consent into KV "consents". Whatever it writes, the store reads no consent, says so at error level
// (without the pseudonym) and counts it; a grant by the citizen afterwards works again.
func TestUnauthenticReadsAsAbsent(t *testing.T) {
	const other = "ffffffffffffffffffffffffffffffff"
	k := p + "." + j + "." + step
	forged, err := json.Marshal(consent.Consent{Pseudonym: p, Journey: j, Step: step, GrantedAt: now, ExpiresAt: now.AddDate(0, 0, 365)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		// write puts the attacker's value into the bucket; the record read back is at key k.
		write  func(t *testing.T, e env)
		reason string
	}{
		{"forged plain JSON under the right key (also: records from before sealing)", func(t *testing.T, e env) {
			put(t, e.kv, k, forged)
		}, "is not sealed"},
		{"another citizen's valid consent moved to this citizen's key", func(t *testing.T, e env) {
			grant(t, e.s, other, j, step)
			put(t, e.kv, k, get(t, e.kv, other+"."+j+"."+step))
		}, "does not open"},
		{"a valid consent of another step moved to this step's key", func(t *testing.T, e env) {
			grant(t, e.s, p, j, "decide-benefit")
			put(t, e.kv, k, get(t, e.kv, p+"."+j+".decide-benefit"))
		}, "does not open"},
		{"a valid consent of another journey moved to this journey's key", func(t *testing.T, e env) {
			grant(t, e.s, p, "school-change", step)
			put(t, e.kv, k, get(t, e.kv, p+".school-change."+step))
		}, "does not open"},
		{"one bit of a valid sealed consent flipped (the revocation undone)", func(t *testing.T, e env) {
			grant(t, e.s, p, j, step)
			if _, err := e.s.Revoke(context.Background(), p, j, step, now.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			v := get(t, e.kv, k)
			v[len(v)/2] ^= 1
			put(t, e.kv, k, v)
		}, "does not open"},
		{"the consent from before its revocation written back", func(t *testing.T, e env) {
			grant(t, e.s, p, j, step)
			granted := get(t, e.kv, k)
			if _, err := e.s.Revoke(context.Background(), p, j, step, now.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			put(t, e.kv, k, granted)
		}, "written back"},
		{"sealed with a key that is not the broker's", func(t *testing.T, e env) {
			s := keystest.Sealer(t)
			v, err := s.Seal(forged, []byte("aperture/kv/"+consent.Bucket+"/"+k))
			if err != nil {
				t.Fatal(err)
			}
			put(t, e.kv, k, v)
		}, "does not open"},
		{"empty value", func(t *testing.T, e env) { put(t, e.kv, k, nil) }, "does not open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := open(t)
			ctx := context.Background()
			tc.write(t, e)
			before := e.s.Unauthentic()

			c, err := e.s.Get(ctx, p, j, step)
			if !errors.Is(err, consent.ErrNotFound) || !errors.Is(err, sealedkv.ErrUnauthentic) || c != nil {
				t.Fatalf("Get = %+v, %v; want absent (ErrNotFound, ErrUnauthentic)", c, err)
			}
			if n := e.s.Unauthentic(); n != before+1 {
				t.Fatalf("unauthentic counter %d after %d, want one more", n, before)
			}
			logged := e.log.String()
			if !strings.Contains(logged, `"level":"ERROR"`) || !strings.Contains(logged, `"bucket":"consents"`) ||
				!strings.Contains(logged, j+"/"+step) || !strings.Contains(logged, tc.reason) {
				t.Fatalf("log does not report the record: %s", logged)
			}
			if strings.Contains(logged, p) {
				t.Fatalf("log names the pseudonym: %s", logged)
			}
			if list, err := e.s.List(ctx, p); err != nil || slicesHas(list, step, j) {
				t.Fatalf("List = %+v, %v; the unauthentic consent is listed", list, err)
			}
			if _, err := e.s.Revoke(ctx, p, j, step, now); !errors.Is(err, consent.ErrNotFound) {
				t.Fatalf("Revoke of an unauthentic consent: %v", err)
			}
			// The citizen's own grant replaces it.
			grant(t, e.s, p, j, step)
			if c, err := e.s.Get(ctx, p, j, step); err != nil || !c.ValidAt(now.Add(time.Hour), maxDays) {
				t.Fatalf("after a new grant: %+v, %v", c, err)
			}
		})
	}
}

func slicesHas(list []*consent.Consent, step, journey string) bool {
	for _, c := range list {
		if c.Step == step && c.Journey == journey {
			return true
		}
	}
	return false
}

func grant(t *testing.T, s *consent.Store, pseudonym, journey, step string) {
	t.Helper()
	if _, err := s.Grant(context.Background(), pseudonym, journey, step, now, 30*24*time.Hour); err != nil {
		t.Fatal(err)
	}
}

func put(t *testing.T, kv jetstream.KeyValue, k string, v []byte) {
	t.Helper()
	if _, err := kv.Put(context.Background(), k, v); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, kv jetstream.KeyValue, k string) []byte {
	t.Helper()
	e, err := kv.Get(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	return e.Value()
}

func TestOpenNeedsSealer(t *testing.T) {
	if _, err := consent.Open(context.Background(), natstest.JetStream(t), consent.Options{}); err == nil {
		t.Fatal("a consent store without a sealing key opened")
	}
}

// BenchmarkGet is the consent read of a release at a step that needs consent: the KV read, opening the
// sealed record and the one history lookup that finds a record written back.
func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	s, err := consent.Open(ctx, natstest.JetStream(b), consent.Options{Sealer: keystest.Sealer(b)})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Grant(ctx, p, j, step, now, time.Hour); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Get(ctx, p, j, step); err != nil {
			b.Fatal(err)
		}
	}
}
