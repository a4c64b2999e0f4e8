package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/aperture-gov/aperture/broker/witness"
)

const witnessUsage = `aperture witness — cosign another log's checkpoints (C2SP tlog-witness)

Usage:
  aperture witness keygen --name NAME [--key FILE]
      create the witness's Ed25519 key (FILE, default witness.key) and print its verifier key, which
      goes into the log operator's witness policy
  aperture witness serve --key FILE --state DIR --log VKEY [--log VKEY …] [--listen ADDR]
      serve POST /add-checkpoint for the logs whose checkpoint verifier keys are given

A witness is run by another institution than the log (the data-protection authority, say). It keeps the
latest checkpoint it cosigned for each log in DIR and cosigns a new one only if it extends that one.
`

func runWitness(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, witnessUsage)
		return nil
	}
	switch args[0] {
	case "keygen":
		return witnessKeygen(args[1:], stdout, stderr)
	case "serve":
		return witnessServe(ctx, args[1:], stdout, stderr)
	}
	return usagef("unknown witness command %q (keygen or serve)", args[0])
}

func witnessKeygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("witness keygen", flag.ContinueOnError)
	addConfigFlag(fs)
	name := fs.String("name", "", `the witness's name, conventionally a URL without scheme ("dpa.example/witness")`)
	keyFile := fs.String("key", "witness.key", "file to write the private key to (must not exist)")
	asJSON := fs.Bool("json", false, "print JSON for machines")
	if err := parseFlagsNoArgs(fs, args, stderr); err != nil {
		return err
	}
	if *name == "" {
		return usagef("--name is required")
	}
	vkey, err := writeWitnessKey(*keyFile, *name)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, struct {
			KeyFile     string `json:"key_file"`
			VerifierKey string `json:"verifier_key"`
		}{*keyFile, vkey})
	}
	fmt.Fprintf(stdout, "wrote %s (keep it secret)\nverifier key: %s\n", *keyFile, vkey)
	return nil
}

// writeWitnessKey creates a witness key in path (never overwriting one) and returns its verifier key.
func writeWitnessKey(path, name string) (string, error) {
	skey, vkey, err := witness.GenerateKey(name)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("witness key directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("create witness key: %w", err)
	}
	_, werr := f.WriteString(skey + "\n")
	if err := f.Sync(); werr == nil {
		werr = err
	}
	if err := f.Close(); werr == nil {
		werr = err
	}
	if werr != nil {
		return "", fmt.Errorf("write witness key: %w", werr)
	}
	return vkey, nil
}

// stringList is a repeatable flag; from the environment or a config file it takes a list separated by
// commas or white space (verifier keys contain neither).
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	v = strings.Trim(v, "[]")
	for _, s := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
		*l = append(*l, s)
	}
	return nil
}

func witnessServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("witness serve", flag.ContinueOnError)
	addConfigFlag(fs)
	var logs stringList
	var (
		listen   = fs.String("listen", "127.0.0.1:7380", "HTTP address of the witness")
		state    = fs.String("state", "witness-state", "directory holding the latest cosigned checkpoint of each log (back it up; never reset it)")
		keyFile  = fs.String("key", "witness.key", "the witness's private key (aperture witness keygen)")
		logFile  = fs.String("log-keys", "", "file with more log verifier keys, one per line (e.g. the broker's DATA/keys/checkpoint.vkey)")
		certFile = fs.String("tls-cert", "", "TLS certificate file (with --tls-key: serve HTTPS)")
		tlsKey   = fs.String("tls-key", "", "TLS key file")
		logLevel = fs.String("log-level", "info", "debug, info, warn or error")
	)
	fs.Var(&logs, "log", "checkpoint verifier key of a log to witness (<origin>+<hash>+<key>); repeat for more logs or key versions")
	if err := parseFlagsNoArgs(fs, args, stderr); err != nil {
		return err
	}
	logger, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	if *logFile != "" {
		b, err := os.ReadFile(*logFile)
		if err != nil {
			return fmt.Errorf("log keys: %w", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				logs = append(logs, line)
			}
		}
	}
	if len(logs) == 0 {
		return usagef("name at least one log with --log VKEY or --log-keys FILE")
	}
	if (*certFile == "") != (*tlsKey == "") {
		return usagef("--tls-cert and --tls-key go together")
	}
	ls, err := witness.ParseLogKeys(logs)
	if err != nil {
		return usagef("%v", err)
	}
	w, err := startWitnessServer(*keyFile, *state, *listen, ls, logger)
	if err != nil {
		return err
	}
	scheme := "http"
	if *certFile != "" {
		scheme = "https"
	}
	fmt.Fprintf(stdout, "witness %s serving %s://%s%s for %d log(s)\nverifier key: %s\n",
		w.srv.Name(), scheme, w.Addr(), witness.AddCheckpointPath, len(ls), w.srv.VerifierKey())
	return w.serve(ctx, *certFile, *tlsKey)
}

// witnessProc is a witness server on a listener.
type witnessProc struct {
	srv  *witness.Server
	lis  net.Listener
	http *http.Server
	done chan error
}

// startWitnessServer loads the key and state and binds the listener; serve starts answering.
func startWitnessServer(keyFile, stateDir, listen string, logs []witness.Log, logger *slog.Logger) (*witnessProc, error) {
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("witness key: %w", err)
	}
	sd, err := witness.OpenStateDir(stateDir)
	if err != nil {
		return nil, err
	}
	srv, err := witness.NewServer(witness.ServerConfig{Key: strings.TrimSpace(string(b)), Logs: logs, State: sd, Logger: logger})
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("witness: listen on %s: %w", listen, err)
	}
	return &witnessProc{
		srv: srv, lis: lis, done: make(chan error, 1),
		http: &http.Server{
			Handler: srv, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
			ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
	}, nil
}

// Addr is the listener's address.
func (w *witnessProc) Addr() string { return w.lis.Addr().String() }

// serve answers until ctx ends.
func (w *witnessProc) serve(ctx context.Context, certFile, keyFile string) error {
	go func() {
		var err error
		if certFile != "" {
			err = w.http.ServeTLS(w.lis, certFile, keyFile)
		} else {
			err = w.http.Serve(w.lis)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		w.done <- err
	}()
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return w.http.Shutdown(sctx)
}

// devWitness is a witness the dev stack runs in-process.
type devWitness struct {
	Name, URL, VKey string
	proc            *witnessProc
	cancel          context.CancelFunc
	stopped         chan struct{}
}

// Close stops the witness.
func (d *devWitness) Close() {
	d.cancel()
	<-d.stopped
}

// startDevWitnesses starts n witnesses on loopback ports, each with a key and state under
// DATA/witness/<i>, following the log of logKey, and returns them with a policy that needs all of
// them. A witness keeps its key and state across restarts of the dev stack, as a real one would.
func startDevWitnesses(data string, n int, logKey note.Verifier, logger *slog.Logger) (_ []*devWitness, _ *witness.Policy, err error) {
	var ws []*devWitness
	defer func() {
		if err != nil {
			for _, w := range ws {
				w.Close()
			}
		}
	}()
	var policy strings.Builder
	var names []string
	for i := 1; i <= n; i++ {
		dir := filepath.Join(data, "witness", fmt.Sprint(i))
		keyFile := filepath.Join(dir, "witness.key")
		if _, err := os.Stat(keyFile); errors.Is(err, fs.ErrNotExist) {
			if _, err := writeWitnessKey(keyFile, fmt.Sprintf("witness-%d.aperture.local/dev", i)); err != nil {
				return nil, nil, err
			}
		}
		proc, err := startWitnessServer(keyFile, filepath.Join(dir, "state"), "127.0.0.1:0",
			[]witness.Log{{Origin: logKey.Name(), Verifiers: []note.Verifier{logKey}}}, logger.With("component", "witness", "witness", i))
		if err != nil {
			return nil, nil, fmt.Errorf("dev witness %d: %w", i, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		w := &devWitness{
			Name: fmt.Sprintf("dev%d", i), URL: "http://" + proc.Addr(), VKey: proc.srv.VerifierKey(),
			proc: proc, cancel: cancel, stopped: make(chan struct{}),
		}
		go func() {
			defer close(w.stopped)
			if err := proc.serve(ctx, "", ""); err != nil {
				logger.Error("dev witness stopped", "witness", w.Name, "err", err)
			}
		}()
		ws = append(ws, w)
		names = append(names, w.Name)
		fmt.Fprintf(&policy, "witness %s %s %s\n", w.Name, w.VKey, w.URL)
	}
	fmt.Fprintf(&policy, "group dev all %s\nquorum dev\n", strings.Join(names, " "))
	p, err := witness.ParsePolicy([]byte(policy.String()))
	if err != nil {
		return nil, nil, fmt.Errorf("dev witness policy: %w", err)
	}
	// The same policy for verifiers: aperture audit verify/prove --witness-policy DATA/witness/policy.
	if err := os.WriteFile(devWitnessPolicyFile(data), []byte(policy.String()), 0o644); err != nil {
		return nil, nil, fmt.Errorf("dev witness policy: %w", err)
	}
	return ws, p, nil
}

// devWitnessPolicyFile is where aperture dev writes its witnesses' policy, for verifiers.
func devWitnessPolicyFile(data string) string { return filepath.Join(data, "witness", "policy") }
