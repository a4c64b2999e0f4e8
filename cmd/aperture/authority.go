package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/aperture-gov/aperture/services/catalog"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/kit"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// runAuthority runs one example authority service on its own, as it would run at the authority.
func runAuthority(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "event" {
		return runAuthorityEvent(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "corrections" {
		return runAuthorityCorrections(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("authority", flag.ContinueOnError)
	addConfigFlag(fs)
	var (
		listen   = fs.String("listen", "", "address to serve on (required)")
		data     = fs.String("data", ".aperture", "data directory with the development CA")
		citizens = fs.Int("citizens", 1000, "number of synthetic demo citizens")
		certs    = fs.String("certs", "", `where the certificate comes from: "files" (--cert/--key/--ca) or "dev" (the development CA in DATA/pki, only when asked for); default files if --cert is set`)
		cert     = fs.String("cert", "", "certificate file")
		key      = fs.String("key", "", "key file")
		ca       = fs.String("ca", "", "CA certificate file")
		brokerID = fs.String("broker-id", mtls.ID(trustDomain, "broker", ""), "the only caller identity served")
		logLevel = fs.String("log-level", "info", "debug, info, warn or error")
	)
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *listen == "" {
		return usagef("usage: aperture authority NAME --listen HOST:PORT")
	}
	logger, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	ref := time.Now().UTC()
	pop := demo.New(*citizens, time.Date(ref.Year(), ref.Month(), 1, 0, 0, 0, 0, time.UTC))
	var auth *kit.Authority
	for _, a := range catalog.Examples(pop) {
		if a.ID == pos[0] {
			auth = a
		}
	}
	if auth == nil {
		return usagef("no example authority %q", pos[0])
	}
	src, err := authorityCerts(*certs, *cert, *key, *ca, *data, auth.ID, logger)
	if err != nil {
		return fmt.Errorf("authority certificate: %w", err)
	}
	srv, err := kit.NewServer(auth, kit.WithLogger(logger), kit.WithAllowedCallers(*brokerID))
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	fmt.Fprintf(stdout, "authority %s serving on %s\n", auth.ID, lis.Addr())
	return srv.Serve(ctx, lis, mtls.ServerConfig(src))
}

// authorityCerts returns the authority's certificate. As for the broker, the development CA is used
// only when --certs dev asks for it: an authority serving citizens' records must not quietly make up
// its own trust.
func authorityCerts(source, cert, key, ca, data, id string, logger *slog.Logger) (mtls.Source, error) {
	if source == "" {
		if cert == "" && key == "" && ca == "" {
			return nil, usagef("no TLS certificate: give --cert, --key and --ca (files), or --certs dev for the development CA in the data directory (development only)")
		}
		source = "files"
	}
	switch source {
	case "files":
		if cert == "" || key == "" || ca == "" {
			return nil, usagef("--certs files needs all of --cert, --key and --ca")
		}
		src, err := mtls.LoadSource(cert, key, ca)
		if err != nil {
			return nil, fmt.Errorf("authority certificate: %w", err)
		}
		return src, nil
	case "dev":
		devca, err := mtls.OpenDevCA(filepath.Join(data, "pki"), trustDomain)
		if err != nil {
			return nil, fmt.Errorf("development CA: %w", err)
		}
		logger.Warn("using the development CA in the data directory; use --cert/--key/--ca in production")
		src, err := devca.Source("authority", id)
		if err != nil {
			return nil, fmt.Errorf("authority certificate: %w", err)
		}
		return src, nil
	}
	return nil, usagef(`--certs must be "files" or "dev"`)
}
