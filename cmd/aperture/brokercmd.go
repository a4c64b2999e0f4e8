package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/aperture-gov/aperture/broker"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// runBroker runs the broker alone, against authorities running elsewhere (see `aperture authority`) and an
// embedded or external NATS.
func runBroker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	addConfigFlag(fs)
	var (
		data       = fs.String("data", ".aperture", "data directory (embedded NATS store, local keys)")
		listen     = fs.String("listen", "127.0.0.1:7443", "gRPC address agencies call")
		natsURL    = fs.String("nats-url", "", "external NATS server or cluster (empty: embedded)")
		natsCreds  = fs.String("nats-creds", "", "NATS credentials file for --nats-url")
		natsListen = fs.String("nats-listen", "", "client address of the embedded NATS server (empty: in-process only)")
		replicas   = fs.Int("replicas", 1, "replicas of streams and buckets (3 on a cluster)")
		policyDir  = fs.String("policies", "", "policy directory (default: built into the binary)")
		cert       = fs.String("cert", "", "broker certificate file (default: issued by the development CA in DATA/pki)")
		key        = fs.String("key", "", "broker key file")
		ca         = fs.String("ca", "", "CA certificate file for agencies and authorities")
		startWait  = fs.Duration("start-timeout", 60*time.Second, "how long to wait for NATS and the authorities at start")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
	)
	if err := parseFlagsNoArgs(fs, args, stderr); err != nil {
		return err
	}
	logger, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	pfs, err := policyFS(*policyDir)
	if err != nil {
		return err
	}
	var certs mtls.Source
	if *cert != "" {
		if certs, err = mtls.LoadSource(*cert, *key, *ca); err != nil {
			return fmt.Errorf("broker certificate: %w", err)
		}
	} else {
		devca, err := mtls.OpenDevCA(filepath.Join(*data, "pki"), trustDomain)
		if err != nil {
			return fmt.Errorf("development CA: %w", err)
		}
		logger.Warn("using the development CA in the data directory; pass --cert/--key/--ca in production")
		if certs, err = devca.Source("broker", ""); err != nil {
			return err
		}
	}
	pseudonyms, err := keys.OpenLocal(filepath.Join(*data, "keys"))
	if err != nil {
		return fmt.Errorf("pseudonym key: %w", err)
	}
	b, err := broker.New(ctx, broker.Config{
		DataDir: *data, Listen: *listen, NATSURL: *natsURL, NATSCredentials: *natsCreds,
		EmbeddedNATSListen: *natsListen, Replicas: *replicas, StartTimeout: *startWait,
	}, broker.Deps{Policies: pfs, Certs: certs, Pseudonyms: pseudonyms, Logger: logger})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "broker listening on %s (policy %s)\n", b.Addr(), b.Bundle().Version)
	return b.Run(ctx)
}
