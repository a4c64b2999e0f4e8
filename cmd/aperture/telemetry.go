package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/aperture-gov/aperture/broker"
	"github.com/aperture-gov/aperture/broker/telemetry"
)

// metricsServer serves /metrics (Prometheus text format), /healthz and /readyz over plain HTTP. It
// carries no citizen data (no id, no value, no pseudonym): bind it to an address only the
// monitoring network reaches.
type metricsServer struct {
	lis net.Listener
	srv *http.Server
}

func listenMetrics(addr string, logger *slog.Logger) (*metricsServer, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	return &metricsServer{lis: lis}, nil
}

// serve starts serving the telemetry's metrics and the broker's health.
func (m *metricsServer) serve(tel *telemetry.Telemetry, b *broker.Broker, logger *slog.Logger) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", tel.MetricsHandler())
	health := b.Health()
	mux.Handle("GET /healthz", health)
	mux.Handle("GET /readyz", health)
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := m.srv.Serve(m.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server", "err", err)
		}
	}()
}

func (m *metricsServer) Addr() string { return m.lis.Addr().String() }

func (m *metricsServer) Close() {
	if m.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = m.srv.Shutdown(ctx) // then the listener is closed
		return
	}
	m.lis.Close()
}
