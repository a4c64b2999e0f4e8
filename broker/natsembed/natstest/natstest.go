// Package natstest starts the real embedded NATS server for tests: JetStream on, storage in the test's
// temporary directory, shut down when the test ends.
package natstest

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aperture-gov/aperture/broker/natsembed"
)

// JetStream starts a server for t and returns a JetStream context on an in-process connection.
func JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	srv, err := natsembed.Start(natsembed.Options{Dir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
