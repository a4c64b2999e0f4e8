package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// logServer serves the access log's public read-only endpoint on its own address, for a broker run
// without a portal.
type logServer struct {
	lis  net.Listener
	srv  *http.Server
	done chan struct{}
}

func listenLog(addr string, h http.Handler, logger *slog.Logger) (*logServer, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("public log: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/log/", h)
	s := &logServer{lis: lis, done: make(chan struct{}), srv: &http.Server{
		Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("public log stopped", "err", err)
		}
	}()
	return s, nil
}

// Addr is the address it listens on.
func (s *logServer) Addr() net.Addr { return s.lis.Addr() }

// Close stops serving.
func (s *logServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	<-s.done
}
