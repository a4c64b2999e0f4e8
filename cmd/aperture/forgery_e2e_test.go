package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/consent"
	"github.com/aperture-gov/aperture/broker/policy"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// TestForgedStateDoesNotRelease is the attack of issue 10 through the real broker over gRPC/mTLS: a
// client with write access to NATS (here a second connection to the broker's own server) writes
// decision inputs straight into the KV buckets. A consent it forges — plain JSON for 365 days, a valid
// sealed consent of another citizen copied under this citizen's key, the citizen's own consent from
// before they revoked it written back — and a sealed consent longer than the policy allows never
// release anything: the release at the consent step is refused with
// FailedPrecondition, the refusal is in the access log, and the broker logs the unauthentic record at
// error level (without the citizen id) and counts it. A case record advanced by hand makes the case
// unknown (NotFound). The journey and its consent step come from the policy bundle.
func TestForgedStateDoesNotRelease(t *testing.T) {
	logs := &lockedBuffer{}
	ts := newTestStack(t, func(o *stackOptions) {
		o.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	j, cs := consentStep(t, ts.Broker.Bundle())
	citizen := ts.citizenFor(j.ID)
	other := ts.Population.Featured()[1].ID
	if other == citizen {
		other = ts.Population.Featured()[0].ID
	}
	ctx := context.Background()

	c := ts.open(j.Steps[0].Agency, j.ID, citizen)
	idx := slices.Index(j.Steps, cs)
	for _, s := range j.Steps[:idx] {
		if _, err := ts.agency(s.Agency).CompleteStep(cw("cw-forge"), &brokerv1.CompleteStepRequest{CaseId: c.GetId(), Step: s.ID}); err != nil {
			t.Fatalf("complete %s: %v", s.ID, err)
		}
	}
	rule := cs.Rules[0]
	release := func() error {
		_, err := ts.agency(cs.Agency).Release(cw("cw-forge"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: rule.Authority, Dataset: rule.Dataset})
		return err
	}

	// The attacker: its own connection to the NATS server, with the write access issue 10 found.
	nc, err := ts.nats.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	consents, err := js.KeyValue(ctx, consent.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	pn := ts.Pseudonyms.Pseudonym(citizen).Value
	key := pn + "." + j.ID + "." + cs.ID
	now := time.Now()

	for _, tc := range []struct {
		name string
		// write puts the forged consent under key.
		write       func(t *testing.T)
		unauthentic bool
		reason      string
	}{
		{"a 365-day consent as plain JSON", func(t *testing.T) {
			forged, err := json.Marshal(consent.Consent{Pseudonym: pn, Journey: j.ID, Step: cs.ID, GrantedAt: now.Add(-time.Hour), ExpiresAt: now.AddDate(0, 0, 365)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := consents.Put(ctx, key, forged); err != nil {
				t.Fatal(err)
			}
		}, true, "has not given it"},
		{"another citizen's valid consent copied to this citizen's key", func(t *testing.T) {
			theirs := ts.Pseudonyms.Pseudonym(other).Value
			if _, err := ts.Broker.Consent.Grant(ctx, theirs, j.ID, cs.ID, now.Add(-time.Hour), 24*time.Hour); err != nil {
				t.Fatal(err)
			}
			e, err := consents.Get(ctx, theirs+"."+j.ID+"."+cs.ID)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := consents.Put(ctx, key, e.Value()); err != nil {
				t.Fatal(err)
			}
		}, true, "has not given it"},
		{"the citizen's consent from before its revocation written back", func(t *testing.T) {
			if _, err := ts.Broker.Consent.Grant(ctx, pn, j.ID, cs.ID, now.Add(-time.Hour), 24*time.Hour); err != nil {
				t.Fatal(err)
			}
			granted, err := consents.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ts.Broker.Consent.Revoke(ctx, pn, j.ID, cs.ID, now); err != nil {
				t.Fatal(err)
			}
			if _, err := consents.Put(ctx, key, granted.Value()); err != nil {
				t.Fatal(err)
			}
		}, true, "has not given it"},
		{"a sealed consent longer than the policy allows", func(t *testing.T) {
			validity := consent.MaxValidity(cs.Consent.MaxDays) + 24*time.Hour
			if _, err := ts.Broker.Consent.Grant(ctx, pn, j.ID, cs.ID, now.Add(-time.Hour), validity); err != nil {
				t.Fatal(err)
			}
		}, false, "longer than the policy allows"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, refusals := ts.Broker.Consent.Unauthentic(), refusalsAt(ts.accessRecords(citizen), cs.ID)
			tc.write(t)
			wantCode(t, release(), codes.FailedPrecondition, tc.reason)
			if got := refusalsAt(ts.accessRecords(citizen), cs.ID); got != refusals+1 {
				t.Fatalf("%d refusals at %s in the access log, want %d", got, cs.ID, refusals+1)
			}
			if got := ts.Broker.Consent.Unauthentic(); tc.unauthentic && got <= before || !tc.unauthentic && got != before {
				t.Fatalf("unauthentic consents counted %d → %d", before, got)
			}
		})
	}
	logged := logs.String()
	if !strings.Contains(logged, `"msg":"stored record does not authenticate; treated as absent"`) ||
		!strings.Contains(logged, `"bucket":"consents"`) || !strings.Contains(logged, `"record":"`+j.ID+"/"+cs.ID+`"`) {
		t.Fatalf("the broker did not log the forged consent at error level:\n%s", logged)
	}
	for _, secret := range []string{citizen, other, pn} {
		if strings.Contains(logged, secret) {
			t.Fatalf("the broker logged %q:\n%s", secret, logged)
		}
	}

	// The citizen's own consent, granted the way the broker does, still releases: what was refused
	// above was the forgery, not the step.
	ts.grantConsent(citizen, j.ID, cs.ID)
	if err := release(); err != nil {
		t.Fatalf("release with the citizen's consent: %v", err)
	}

	// A case advanced by hand (plain JSON: the attacker cannot seal) is no case at all.
	t.Run("case advanced by hand", func(t *testing.T) {
		kv, err := js.KeyValue(ctx, cases.Bucket)
		if err != nil {
			t.Fatal(err)
		}
		advanced := map[string]any{"id": c.GetId(), "journey": j.ID, "citizen_id": citizen, "state": "open",
			"current": len(j.Steps) - 1, "opened_by": j.Steps[0].Agency}
		forged, err := json.Marshal(advanced)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, c.GetId(), forged); err != nil {
			t.Fatal(err)
		}
		// The broker's cache drops the case when its watch delivers the write; poll, do not sleep. Until
		// then a release is served from the last authentic state, which is right: the forged record
		// (the case moved to its last step) would not release this step's data anyway. Once the
		// broker has found the write forged, the case is gone for good.
		deadline := time.Now().Add(15 * time.Second)
		for {
			err := release()
			if status.Code(err) == codes.NotFound {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("release on a forged case: %v, want NotFound", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		for range 5 {
			if err := release(); status.Code(err) != codes.NotFound {
				t.Fatalf("a release after the forged case was dropped: %v, want NotFound", err)
			}
		}
		if ts.Broker.Cases.Unauthentic() == 0 {
			t.Fatal("the forged case was not counted")
		}
		if !strings.Contains(logs.String(), `"bucket":"cases"`) {
			t.Fatal("the forged case was not logged")
		}
	})
}

// consentStep is the first step (in the bundle's order) that needs consent, releases something and is
// not covert, with its journey.
func consentStep(t *testing.T, b *policy.Bundle) (*policy.Journey, *policy.Step) {
	t.Helper()
	for _, j := range b.Journeys() {
		for _, s := range j.Steps {
			if s.Consent != nil && s.Covert == nil && len(s.Rules) > 0 {
				return j, s
			}
		}
	}
	t.Fatal("no journey in the policies has a non-covert step that needs consent: nothing to forge a consent for")
	return nil, nil
}

func refusalsAt(recs []*auditv1.AccessRecord, step string) int {
	n := 0
	for _, r := range recs {
		if r.GetDecision() == auditv1.Decision_DECISION_REFUSED && r.GetStep() == step && r.GetCode() == codes.FailedPrecondition.String() {
			n++
		}
	}
	return n
}

// lockedBuffer collects the broker's log lines from every goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
