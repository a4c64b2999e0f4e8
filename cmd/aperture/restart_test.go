package main

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/aperture-gov/aperture/broker/natsembed"
	"github.com/aperture-gov/aperture/policies"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// runStack starts a stack the way `aperture dev` does (the broker owns its NATS: embedded in the data
// directory, or the external URL) and returns a stop function that waits for a clean shutdown.
func runStack(t *testing.T, o stackOptions) (*stack, func()) {
	t.Helper()
	o.Listen, o.Citizens, o.Policies, o.RandomPorts = "127.0.0.1:0", 100, policies.Files(), true
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := startStack(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Run(runCtx) }()
	return st, func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("stack stopped with %v", err)
		}
	}
}

func clients(t *testing.T, st *stack) (brokerv1.BrokerServiceClient, auditv1.AuditServiceClient) {
	t.Helper()
	dial := func(kind, name string) *grpc.ClientConn {
		src, err := st.CA.Source(kind, name)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(st.Broker.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(mtls.ClientConfig(src, mtls.ID(trustDomain, "broker", "")))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	return brokerv1.NewBrokerServiceClient(dial("agency", "municipality")), auditv1.NewAuditServiceClient(dial("auditor", "dpo"))
}

// TestRestartKeepsCasesAndLog stops the dev stack cleanly and starts it again on the same data
// directory: the case, its step and the access log are still there.
func TestRestartKeepsCasesAndLog(t *testing.T) {
	dir := t.TempDir()
	st, stop := runStack(t, stackOptions{DataDir: dir})
	citizen := st.Population.Featured()[0].ID
	bc, _ := clients(t, st)
	opened, err := bc.OpenCase(cw("cw-1"), &brokerv1.OpenCaseRequest{Journey: "sickness-benefit", CitizenId: citizen})
	if err != nil {
		t.Fatal(err)
	}
	caseID := opened.GetCase().GetId()
	rel, err := bc.Release(cw("cw-1"), &brokerv1.ReleaseRequest{CaseId: caseID, Authority: "population", Dataset: "person"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bc.CompleteStep(cw("cw-1"), &brokerv1.CompleteStepRequest{CaseId: caseID, Step: "register-absence"}); err != nil {
		t.Fatal(err)
	}
	stop()

	st2, stop2 := runStack(t, stackOptions{DataDir: dir})
	defer stop2()
	bc2, ac2 := clients(t, st2)
	got, err := bc2.GetCase(cw("cw-1"), &brokerv1.GetCaseRequest{CaseId: caseID})
	if err != nil {
		t.Fatalf("case lost across restart: %v", err)
	}
	if got.GetCase().GetCurrentStep() != "check-employment-requirement" {
		t.Fatalf("case at %q after restart", got.GetCase().GetCurrentStep())
	}
	recs, err := ac2.ListAccessRecords(cw("dpo"), &auditv1.ListAccessRecordsRequest{CitizenId: citizen})
	if err != nil {
		t.Fatal(err)
	}
	// The release, and the GetCase above (a case read, logged before it answered); besides them the
	// register check made before the case was opened.
	r, checks := st2.splitChecks(recs.GetRecords())
	if len(r) != 2 || r[1].GetId() != rel.GetAccessId() || r[0].GetKind() != auditv1.AccessKind_ACCESS_KIND_CASE_READ {
		t.Fatalf("access log after restart: %v", recs.GetRecords())
	}
	st2.wantChecks(t, checks, caseID)
}

// TestExternalNATS runs the broker against a NATS server it does not embed, by URL: a server that
// requires TLS and authentication, which the broker passes with its certificate and nkey seed file.
func TestExternalNATS(t *testing.T) {
	data, natsDir := t.TempDir(), t.TempDir()
	keyFile := filepath.Join(natsDir, "broker.nk")
	key, err := natsembed.LoadOrCreateKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	// The server's certificate comes from the CA the stack will use, so the broker trusts it.
	ca, err := mtls.OpenDevCA(filepath.Join(data, "pki"), trustDomain)
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.Source(mtls.KindBroker, "")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsembed.Start(natsembed.Options{Dir: natsDir, Port: -1, ServerName: "external", BrokerKey: key, TLS: serverCert})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	st, stop := runStack(t, stackOptions{DataDir: data, NATSURL: srv.ClientURL(), NATSNKeyFile: keyFile})
	defer stop()
	bc, _ := clients(t, st)
	opened, err := bc.OpenCase(cw("cw-1"), &brokerv1.OpenCaseRequest{Journey: "moving-house", CitizenId: st.Population.Featured()[1].ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bc.Release(cw("cw-1"), &brokerv1.ReleaseRequest{CaseId: opened.GetCase().GetId(), Authority: "population", Dataset: "person"}); err != nil {
		t.Fatal(err)
	}
	if n := srv.NATS().NumClients(); n == 0 {
		t.Fatal("the broker is not connected to the external server")
	}
}
