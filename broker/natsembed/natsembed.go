// Package natsembed runs a NATS server with JetStream inside the broker process, so a single-machine
// deployment needs nothing installed: the broker's state and its access log live in the data directory.
//
// The server is a closed room (see auth.go): every connection authenticates, the in-process ones
// included. The broker is an nkey user with full access; agency systems connect over mutual TLS and
// are mapped to a user by the SPIFFE ID in their certificate (nats-server's verify_and_map), which may
// only subscribe to aperture.events.agency.<its id>.> — no publish, no JetStream API, no KV, no other
// subject. Nobody else gets in: there is no anonymous user.
//
// The server fsyncs every JetStream write before acknowledging it (SyncAlways). JetStream's default is
// to fsync every two minutes, which on a single node can lose writes that were already acknowledged
// if the machine crashes; the access log promises "durable before answer", so that is not acceptable.
package natsembed

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// KeyFile is the broker's nkey seed in Options.Dir when Options.BrokerKey is not given.
const KeyFile = "broker.nk"

// readyTimeout bounds how long Start waits for the server to accept clients.
const readyTimeout = 10 * time.Second

// Options configure the embedded server.
type Options struct {
	// Dir is the JetStream store directory. Required.
	Dir string
	// Host is the interface clients connect to; default 127.0.0.1.
	Host string
	// Port is the client port: 0 means the NATS default (4222), -1 a random free port (tests).
	Port int
	// Logger receives the server's log lines; nil discards them.
	Logger *slog.Logger
	// ServerName names the server in logs and monitoring; default "aperture".
	ServerName string
	// BrokerKey is the nkey of the broker's user, the only user with access to streams and buckets.
	// Nil uses the seed in Dir/KeyFile, created on first start (LoadOrCreateKey), so a server
	// restarted on the same Dir takes the broker's connections back and tools on the machine that can
	// read Dir can connect as the broker.
	BrokerKey nkeys.KeyPair
	// TLS, if set, makes the client port require TLS 1.3 with a client certificate that chains to the
	// Source's roots; the server presents the Source's certificate. Agencies need it: they are
	// identified by their certificate. Without it only the broker's nkey gets in.
	TLS mtls.Source
	// Agencies may connect with their client certificate and subscribe to their own events. Requires TLS.
	Agencies []Agency
}

// Server is a running embedded NATS server.
type Server struct {
	srv  *server.Server
	addr string // host:port clients dial, fixed at start so reconnects find a restarted server
	key  nkeys.KeyPair
	// clientTLS is how Connect's connections speak TLS when they fall back to TCP (see connProvider);
	// nil when the server has no TLS.
	clientTLS *tls.Config
	// stopping is set before the server starts shutting down: a client that reconnects in-process
	// to a server in mid-shutdown can be handed a connection that dies a moment later, taking the
	// first request sent on it along.
	stopping atomic.Bool
}

// Start starts the server and waits until it accepts connections.
func Start(opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("start embedded NATS: Dir is required")
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.ServerName == "" {
		opts.ServerName = "aperture"
	}
	if opts.BrokerKey == nil {
		k, err := LoadOrCreateKey(filepath.Join(opts.Dir, KeyFile))
		if err != nil {
			return nil, fmt.Errorf("start embedded NATS: broker key: %w", err)
		}
		opts.BrokerKey = k
	}
	sopts := &server.Options{
		ServerName: opts.ServerName,
		Host:       opts.Host,
		Port:       opts.Port,
		JetStream:  true,
		StoreDir:   opts.Dir,
		// Fsync before every acknowledgement; see the package comment.
		SyncAlways: true,
		// The broker owns signal handling.
		NoSigs: true,
		NoLog:  opts.Logger == nil,
	}
	clientTLS, err := configureAuth(sopts, opts)
	if err != nil {
		return nil, fmt.Errorf("start embedded NATS in %s: %w", opts.Dir, err)
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("start embedded NATS in %s: %w", opts.Dir, err)
	}
	if opts.Logger != nil {
		// Debug only, never trace: trace lines carry message payloads, and some streams (cases) hold
		// citizen ids, which must never reach a log.
		srv.SetLoggerV2(&logAdapter{l: opts.Logger}, opts.Logger.Enabled(context.Background(), slog.LevelDebug), false, false)
	}
	srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("start embedded NATS in %s: not ready for connections after %s", opts.Dir, readyTimeout)
	}
	s := &Server{srv: srv, key: opts.BrokerKey, clientTLS: clientTLS}
	if a, ok := srv.Addr().(*net.TCPAddr); ok {
		s.addr = net.JoinHostPort(opts.Host, strconv.Itoa(a.Port))
	}
	return s, nil
}

// ClientURL is the URL clients (agency systems, the CLI) use to reach the server: tls:// when the
// client port requires TLS, nats:// otherwise.
func (s *Server) ClientURL() string {
	if s.clientTLS != nil {
		return "tls://" + s.addr
	}
	return "nats://" + s.addr
}

// Connect opens a client connection authenticated as the broker. It is in-process (no TCP, no TLS)
// while this server runs. If the server shuts down, the client reconnects over TCP (and TLS, with
// the server's own certificate as client certificate) to the same address, so a server restarted on
// the same port, Dir and key picks existing connections up again.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	p := &connProvider{s: s}
	all := append([]nats.Option{nats.InProcessServer(p), nats.SetCustomDialer(p), BrokerAuth(s.key)}, opts...)
	if s.clientTLS != nil {
		// A TLS configuration asks every server for TLS (nats.go ≥ 1.56), the in-process one
		// included; the provider's SkipTLSHandshake keeps TLS off the in-process pipe, where it would
		// only cost CPU, and on for the TCP fallback.
		tc := s.clientTLS
		all = append(all, func(o *nats.Options) error { o.TLSConfig = tc; return nil })
	}
	nc, err := nats.Connect("nats://"+s.addr, all...)
	if err != nil {
		return nil, fmt.Errorf("connect to embedded NATS: %w", err)
	}
	return nc, nil
}

// Shutdown stops the server and waits until it has stopped.
func (s *Server) Shutdown() {
	s.stopping.Store(true)
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}

// NATS returns the underlying server, for callers that need its monitoring API.
func (s *Server) NATS() *server.Server { return s.srv }

// connProvider hands out in-process connections while the server runs and falls back to TCP once
// it has stopped: nats.go asks the same provider on every reconnect and has no fallback itself. It
// is the connection's dialer too, for the one thing nats.go asks a dialer alone: whether to wrap the
// connection it just got in TLS (not the in-process pipe).
type connProvider struct {
	s         *Server
	inProcess atomic.Bool // the last connection handed out is the in-process pipe
}

func (p *connProvider) InProcessConn() (net.Conn, error) {
	if !p.s.stopping.Load() && p.s.srv.Running() {
		if c, err := p.s.srv.InProcessConn(); err == nil {
			p.inProcess.Store(true)
			return c, nil
		}
	}
	p.inProcess.Store(false)
	if p.s.addr == "" {
		return nil, errors.New("embedded NATS server is not running")
	}
	return net.DialTimeout("tcp", p.s.addr, 2*time.Second)
}

// Dial is never called while InProcessServer is set (nats.go asks InProcessConn first); it dials
// the server's TCP address as the fallback does.
func (p *connProvider) Dial(network, _ string) (net.Conn, error) {
	p.inProcess.Store(false)
	return net.DialTimeout(network, p.s.addr, 2*time.Second)
}

// SkipTLSHandshake reports whether the connection nats.go just got is the in-process pipe, which the
// server accepts in the clear even when its TCP clients must speak TLS.
func (p *connProvider) SkipTLSHandshake() bool { return p.inProcess.Load() }

// logAdapter sends the server's log lines to slog.
type logAdapter struct{ l *slog.Logger }

func (a *logAdapter) Noticef(format string, v ...any) { a.l.Info(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }

// Fatalf logs at error level: the server's own logger would exit the process, which is the
// broker's decision to make, not the library's.
func (a *logAdapter) Fatalf(format string, v ...any) {
	a.l.Error(fmt.Sprintf(format, v...), "fatal", true)
}

// Tracef is never enabled (see Start) but the interface requires it.
func (a *logAdapter) Tracef(format string, v ...any) {
	a.l.Log(context.Background(), slog.LevelDebug-4, fmt.Sprintf(format, v...))
}
