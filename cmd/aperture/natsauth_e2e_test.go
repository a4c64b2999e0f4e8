package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/policies"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// TestAgencyConnectsAsPrinted starts the dev stack, connects to its NATS exactly as `aperture dev`
// tells an agency to (URL, certificate, key and CA from the banner), and checks that the agency
// learns of a case it must act on and cannot read the case bucket.
func TestAgencyConnectsAsPrinted(t *testing.T) {
	dir := t.TempDir()
	st, stop := runStack(t, stackOptions{DataDir: dir, NATSListen: "127.0.0.1:0"})
	defer stop()
	var banner bytes.Buffer
	printDevBanner(&banner, st, dir)
	m := regexp.MustCompile(`nats --tlscert (\S+) --tlskey (\S+) --tlsca (\S+) -s (tls://\S+) sub '(\S+)'`).FindStringSubmatch(banner.String())
	if m == nil {
		t.Fatalf("the banner does not say how an agency connects to NATS:\n%s", banner.String())
	}
	t.Logf("aperture dev prints:\n%s", banner.String())
	certFile, keyFile, caFile, url, subject := m[1], m[2], m[3], m[4], m[5]
	for _, f := range []string{certFile, keyFile, caFile} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("the banner names %s: %v", f, err)
		}
	}
	if !strings.Contains(banner.String(), strings.TrimPrefix(url, "tls://")) || url != st.Broker.NATSURL() {
		t.Fatalf("banner URL %s, broker's NATS at %s", url, st.Broker.NATSURL())
	}

	// The agency of the example, and a journey it opens: both from the registry and policies.
	reg, err := policy.LoadRegistry(policies.Files(), "registry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	agency := strings.TrimSuffix(strings.TrimPrefix(subject, "aperture.events.agency."), ".>")
	if !slices.ContainsFunc(reg.Agencies, func(a *policy.Agency) bool { return a.ID == agency }) {
		t.Fatalf("the banner's subject %s is not a registry agency's", subject)
	}
	var journey string
	for _, j := range st.Broker.Bundle().Journeys() {
		if j.Steps[0].Agency == agency {
			journey = j.ID
			break
		}
	}
	if journey == "" {
		t.Fatalf("no journey starts with agency %s", agency)
	}

	errs := make(chan error, 16)
	nc, err := nats.Connect(url, nats.ClientCert(certFile, keyFile), nats.RootCAs(caFile), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("agency %s cannot connect as printed: %v", agency, err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	src, err := st.CA.Source(mtls.KindAgency, agency)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(st.Broker.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(mtls.ClientConfig(src, mtls.ID(trustDomain, mtls.KindBroker, "")))))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	opened, err := brokerv1.NewBrokerServiceClient(cc).OpenCase(cw("cw-1"), &brokerv1.OpenCaseRequest{Journey: journey, CitizenId: st.Population.IDs()[0]})
	if err != nil {
		t.Fatal(err)
	}
	caseID := opened.GetCase().GetId()
	deadline := time.Now().Add(20 * time.Second)
	for {
		msg, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("no step_started event for %s: %v", caseID, err)
		}
		var ev brokerv1.CaseEvent
		if err := proto.Unmarshal(msg.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.GetCaseId() == caseID && ev.GetType() == cases.EventStepStarted {
			break
		}
	}

	// The same connection cannot read the cases bucket, neither through JetStream nor by subject.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ajs, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if kv, err := ajs.KeyValue(ctx, cases.Bucket); err == nil {
		if _, err := kv.Get(ctx, caseID); err == nil {
			t.Fatal("the agency read a case from KV")
		}
	}
	awaitPermissionError(t, errs, "$JS.API.STREAM.INFO.KV_"+cases.Bucket)
	if _, err := nc.SubscribeSync("$KV." + cases.Bucket + ".>"); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	awaitPermissionError(t, errs, "$KV."+cases.Bucket+".>")
}

// awaitPermissionError waits for the server's permission violation naming subject.
func awaitPermissionError(t *testing.T, errs <-chan error, subject string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(strings.ToLower(err.Error()), strings.ToLower(subject)) {
				return
			}
		case <-deadline:
			t.Fatalf("no permission violation for %s within 10s", subject)
		}
	}
}

// anonymousNATS starts a NATS server that lets anyone in, as a careless operator might run one, and
// returns its URL.
func anonymousNATS(t *testing.T) string {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	return srv.ClientURL()
}

// TestAnonymousExternalNATS: the broker refuses an external NATS that lets anyone in; with
// InsecureNATS it starts, and says so at error level.
func TestAnonymousExternalNATS(t *testing.T) {
	url := anonymousNATS(t)
	for _, insecure := range []bool{false, true} {
		var logs syncBuffer
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		st, err := startStack(ctx, stackOptions{
			DataDir: t.TempDir(), Listen: "127.0.0.1:0", Citizens: 10, Policies: policies.Files(), RandomPorts: true,
			NATSURL: url, InsecureNATS: insecure, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		})
		cancel()
		if !insecure {
			if err == nil || !strings.Contains(err.Error(), "refusing to use NATS") || !strings.Contains(err.Error(), "accepts anonymous connections") {
				t.Fatalf("broker on an anonymous NATS: err = %v, want a refusal", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("broker with InsecureNATS: %v", err)
		}
		runCtx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- st.Run(runCtx) }()
		stop()
		if err := <-done; err != nil {
			t.Errorf("stack stopped with %v", err)
		}
		if !regexp.MustCompile(`level=ERROR msg="INSECURE: the NATS server accepts anonymous connections`).MatchString(logs.String()) {
			t.Fatalf("no error-level line about the insecure NATS:\n%s", logs.String())
		}
		if !strings.Contains(logs.String(), "level=WARN msg=\"the connection to NATS is not encrypted") {
			t.Fatalf("no warning about the plaintext connection:\n%s", logs.String())
		}
	}
}
