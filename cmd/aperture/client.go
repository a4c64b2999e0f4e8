package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/server"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// clientFlags are the connection flags of the client commands. By default a command acts as a demo
// agency (or auditor) with the certificate `aperture dev` issued into the data directory.
type clientFlags struct {
	kind       string // "agency" or "auditor"
	broker     string
	brokerID   string
	data       string
	as         string
	caseworker string
	cert       string
	key        string
	ca         string
	json       bool
	utc        bool
	timeout    time.Duration
}

// clock formats the times a command prints: local time with its zone, or UTC with --utc.
type clock struct{ loc *time.Location }

// clock is the clock the flags ask for.
func (c *clientFlags) clock() clock {
	if c.utc {
		return clock{time.UTC}
	}
	return clock{time.Local}
}

// ts is t as "2006-01-02 15:04 MST" in the clock's zone; "" for no time.
func (ck clock) ts(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	loc := ck.loc
	if loc == nil {
		loc = time.Local
	}
	return t.AsTime().In(loc).Format("2006-01-02 15:04 MST")
}

func (c *clientFlags) register(fs *flag.FlagSet, kind, defaultAs string) {
	c.kind = kind
	addConfigFlag(fs)
	fs.StringVar(&c.broker, "broker", "127.0.0.1:7443", "broker address")
	fs.StringVar(&c.brokerID, "broker-id", mtls.ID(trustDomain, "broker", ""), "SPIFFE id the broker's certificate must carry")
	fs.StringVar(&c.data, "data", ".aperture", "data directory of `aperture dev`, for the demo certificates")
	fs.StringVar(&c.as, "as", defaultAs, "act as this demo "+kind+" (its certificate in DATA/pki)")
	if kind == "agency" {
		fs.StringVar(&c.caseworker, "caseworker", "", "caseworker id the agency asserts (logged; default `AGENCY-cw-1`, the demo agency's first caseworker)")
	}
	fs.StringVar(&c.cert, "cert", "", "client certificate file (instead of the demo certificate)")
	fs.StringVar(&c.key, "key", "", "client key file")
	fs.StringVar(&c.ca, "ca", "", "CA certificate file to verify the broker")
	fs.BoolVar(&c.json, "json", false, "print JSON for machines")
	fs.BoolVar(&c.utc, "utc", false, "print times in UTC (default: local time, with its zone)")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "time limit for the call")
}

func (c *clientFlags) dial() (*grpc.ClientConn, error) {
	cert, key, ca := c.cert, c.key, c.ca
	pki := filepath.Join(c.data, "pki")
	if cert == "" {
		cert = filepath.Join(pki, c.kind+"-"+c.as+".crt")
		key = filepath.Join(pki, c.kind+"-"+c.as+".key")
	}
	if ca == "" {
		ca = filepath.Join(pki, "ca.crt")
	}
	src, err := mtls.LoadSource(cert, key, ca)
	if err != nil {
		return nil, fmt.Errorf("load %s certificate (is `aperture dev` running with --data %s?): %w", c.kind, c.data, err)
	}
	cc, err := grpc.NewClient(c.broker, grpc.WithTransportCredentials(credentials.NewTLS(mtls.ClientConfig(src, c.brokerID))))
	if err != nil {
		return nil, fmt.Errorf("connect to broker at %s: %w", c.broker, err)
	}
	return cc, nil
}

// callContext bounds a call and, for agencies, names the caseworker.
func (c *clientFlags) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	if c.kind == "agency" {
		cw := c.caseworker
		if cw == "" {
			// Each demo agency has its own caseworker, so the citizen's log tells agencies' people apart.
			cw = c.as + "-cw-1"
		}
		ctx = metadata.AppendToOutgoingContext(ctx, server.CaseworkerHeader, cw)
	}
	return ctx, cancel
}
