package main

import (
	"context"
	"flag"
	"fmt"
	"io"
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
	fs := flag.NewFlagSet("authority", flag.ContinueOnError)
	addConfigFlag(fs)
	var (
		listen   = fs.String("listen", "", "address to serve on (required)")
		data     = fs.String("data", ".aperture", "data directory with the development CA")
		citizens = fs.Int("citizens", 1000, "number of synthetic demo citizens")
		cert     = fs.String("cert", "", "certificate file (default: issued by the development CA)")
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
	var src mtls.Source
	if *cert != "" {
		src, err = mtls.LoadSource(*cert, *key, *ca)
	} else {
		var devca *mtls.DevCA
		if devca, err = mtls.OpenDevCA(filepath.Join(*data, "pki"), trustDomain); err == nil {
			src, err = devca.Source("authority", auth.ID)
		}
	}
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
