// Package vault is Aperture's HashiCorp Vault client: AppRole login with token renewal and re-login,
// transit (checkpoint signatures, wrapped data keys) and PKI certificates as an [mtls.Source]. It is
// used by the broker, the authority services and agency clients, so it does not depend on the broker.
//
// There is no fallback: when Vault is configured and cannot be reached at start, [Open] fails; while
// running, a request that Vault cannot answer fails, and the caller decides (the broker refuses to
// publish a checkpoint it cannot sign).
package vault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Client is a logged-in Vault client. Its token is renewed in the background with the api's
// LifetimeWatcher; when renewal fails, the token reaches its max TTL, or a request is refused with
// 403 (token expired or revoked), it logs in again. It is safe for concurrent use.
type Client struct {
	cfg Config
	api *api.Client
	log *slog.Logger

	loginMu  sync.Mutex
	gen      atomic.Uint64 // incremented by every successful login
	secret   atomic.Pointer[api.Secret]
	relogged chan struct{} // poked after a login outside the maintenance loop

	logins, renewals atomic.Int64
	failures         atomic.Int64 // failed requests, renewals and logins
	expires          atomic.Int64 // Unix nanoseconds at which the current token's lease ends

	cancel context.CancelFunc
	done   chan struct{}
}

// Open validates cfg, logs in with AppRole and starts token maintenance. It fails with a clear error,
// and starts nothing, when Vault is unreachable or refuses the login. logger may be nil.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	acfg := api.DefaultConfig()
	if acfg.Error != nil {
		return nil, fmt.Errorf("vault client: %w", acfg.Error)
	}
	acfg.Address = cfg.Address
	acfg.Timeout = cfg.Timeout
	acfg.MaxRetries = max(cfg.MaxRetries, 0)
	if cfg.CACert != "" || cfg.TLSServerName != "" {
		if err := acfg.ConfigureTLS(&api.TLSConfig{CACert: cfg.CACert, TLSServerName: cfg.TLSServerName}); err != nil {
			return nil, fmt.Errorf("vault client TLS: %w", err)
		}
	}
	ac, err := api.NewClient(acfg)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	ac.ClearToken() // never a VAULT_TOKEN from the environment: this client logs in itself
	if cfg.Namespace != "" {
		ac.SetNamespace(cfg.Namespace)
	} else {
		ac.ClearNamespace()
	}
	c := &Client{
		cfg: cfg, api: ac, log: logger.With("vault", cfg.Address),
		relogged: make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	if err := c.login(ctx); err != nil {
		return nil, fmt.Errorf("vault is configured but not usable at %s: %w", cfg.Address, err)
	}
	mctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.maintain(mctx)
	return c, nil
}

// Close stops token maintenance. Requests made afterwards may fail once the token expires.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	return nil
}

// Config returns the configuration (with defaults).
func (c *Client) Config() Config { return c.cfg }

// Logins and Renewals count successful AppRole logins and token renewals, for metrics and tests.
func (c *Client) Logins() int64   { return c.logins.Load() }
func (c *Client) Renewals() int64 { return c.renewals.Load() }

// leased notes when the token of s (a login or renewal answer) expires.
func (c *Client) leased(s *api.Secret) {
	if s != nil && s.Auth != nil {
		c.expires.Store(time.Now().Add(time.Duration(s.Auth.LeaseDuration) * time.Second).UnixNano())
	}
}

// TokenTTL is how long the current token lasts unless renewed (0 once expired).
func (c *Client) TokenTTL() time.Duration {
	return max(time.Until(time.Unix(0, c.expires.Load())), 0)
}

// Failures counts failed requests (a missing path aside), renewals and logins.
func (c *Client) Failures() int64 { return c.failures.Load() }

// Instrument reports the client's token TTL, logins, renewals and failures as OpenTelemetry
// metrics, labelled with role (what the client is for, e.g. "keys" or "certificates").
// Unregister the returned registration when the client closes.
func (c *Client) Instrument(m metric.Meter, role string) (metric.Registration, error) {
	ttl, err1 := m.Float64ObservableGauge("aperture_vault_token_ttl_seconds", metric.WithUnit("s"),
		metric.WithDescription("Seconds until the Vault token expires unless renewed; near 0 means renewal and login are failing."))
	logins, err2 := m.Int64ObservableCounter("aperture_vault_logins_total", metric.WithDescription("Successful AppRole logins."))
	renewals, err3 := m.Int64ObservableCounter("aperture_vault_renewals_total", metric.WithDescription("Successful token renewals."))
	failures, err4 := m.Int64ObservableCounter("aperture_vault_failures_total", metric.WithDescription("Failed Vault requests, renewals and logins."))
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return nil, fmt.Errorf("vault metrics: %w", err)
	}
	attrs := metric.WithAttributes(attribute.String("role", role))
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveFloat64(ttl, c.TokenTTL().Seconds(), attrs)
		o.ObserveInt64(logins, c.Logins(), attrs)
		o.ObserveInt64(renewals, c.Renewals(), attrs)
		o.ObserveInt64(failures, c.Failures(), attrs)
		return nil
	}, ttl, logins, renewals, failures)
}

// Accessor is the accessor of the current token: not a secret, it names the token for an operator
// who wants to revoke it.
func (c *Client) Accessor() string {
	if s := c.secret.Load(); s != nil && s.Auth != nil {
		return s.Auth.Accessor
	}
	return ""
}

func (c *Client) login(ctx context.Context) error {
	roleID, secretID, err := c.cfg.AppRole.credentials()
	if err != nil {
		return err
	}
	// The login must not carry an old token: a revoked one would make Vault refuse the request.
	lc, err := c.api.CloneWithHeaders()
	if err != nil {
		return fmt.Errorf("AppRole login: %w", err)
	}
	lc.ClearToken()
	path := "auth/" + c.cfg.AppRole.Mount + "/login"
	s, err := lc.Logical().WriteWithContext(ctx, path, map[string]any{"role_id": roleID, "secret_id": secretID})
	if err != nil {
		return fmt.Errorf("AppRole login at %s: %w", path, err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return fmt.Errorf("AppRole login at %s: no token in the response", path)
	}
	c.api.SetToken(s.Auth.ClientToken)
	c.secret.Store(s)
	c.leased(s)
	c.gen.Add(1)
	c.logins.Add(1)
	c.log.Info("vault login", "mount", c.cfg.AppRole.Mount, "ttl", time.Duration(s.Auth.LeaseDuration)*time.Second, "renewable", s.Auth.Renewable)
	return nil
}

// relogin logs in again unless another goroutine already did since generation gen was observed.
func (c *Client) relogin(ctx context.Context, gen uint64) error {
	c.loginMu.Lock()
	defer c.loginMu.Unlock()
	if c.gen.Load() != gen {
		return nil
	}
	if err := c.login(ctx); err != nil {
		return err
	}
	select {
	case c.relogged <- struct{}{}:
	default:
	}
	return nil
}

// maintain renews the token with a LifetimeWatcher and logs in again when the watcher gives up.
func (c *Client) maintain(ctx context.Context) {
	defer close(c.done)
	backoff := 500 * time.Millisecond
	for {
		s := c.secret.Load()
		gen := c.gen.Load()
		w, err := c.api.NewLifetimeWatcher(&api.LifetimeWatcherInput{
			Secret:        s,
			RenewBehavior: api.RenewBehaviorErrorOnErrors,
		})
		if err != nil {
			c.log.Error("vault token watcher", "err", err)
			return
		}
		exited := make(chan struct{})
		go func() {
			defer close(exited)
			w.Start()
		}()
		reason := c.watch(ctx, w)
		w.Stop()
		// Stop only signals: wait for the watcher's goroutine, so none outlives Close. A renewal in
		// flight ends within the client's request timeout.
		<-exited
		switch reason {
		case watchStopped:
			return
		case watchRelogged:
			continue // a request already logged in again; watch the new token
		}
		// The token cannot be renewed any further (max TTL, revoked, renewal failed): log in again,
		// retrying with backoff while Vault is unreachable. Requests fail meanwhile.
		for {
			lctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
			err := c.relogin(lctx, gen)
			cancel()
			if err == nil {
				backoff = 500 * time.Millisecond
				break
			}
			c.failures.Add(1)
			c.log.Error("vault re-login failed; retrying", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Minute)
		}
		// relogin poked relogged itself; drain it so the next watch does not restart at once.
		select {
		case <-c.relogged:
		default:
		}
	}
}

type watchResult int

const (
	watchStopped watchResult = iota
	watchRelogged
	watchDone
)

func (c *Client) watch(ctx context.Context, w *api.LifetimeWatcher) watchResult {
	for {
		select {
		case <-ctx.Done():
			return watchStopped
		case <-c.relogged:
			return watchRelogged
		case err := <-w.DoneCh():
			if err != nil {
				c.failures.Add(1)
				c.log.Warn("vault token renewal failed; logging in again", "err", err)
			} else {
				c.log.Info("vault token reached the end of its lifetime; logging in again")
			}
			return watchDone
		case r := <-w.RenewCh():
			c.renewals.Add(1)
			c.leased(r.Secret)
			if r.Secret != nil && r.Secret.Auth != nil {
				c.log.Debug("vault token renewed", "ttl", time.Duration(r.Secret.Auth.LeaseDuration)*time.Second)
			}
		}
	}
}

// Read reads path (GET). A missing path is an error wrapping ErrNotFound.
func (c *Client) Read(ctx context.Context, path string) (*api.Secret, error) {
	return c.do(ctx, path, func(ctx context.Context) (*api.Secret, error) {
		s, err := c.api.Logical().ReadWithContext(ctx, path)
		if err == nil && s == nil {
			err = ErrNotFound
		}
		return s, err
	})
}

// Write writes data to path (PUT/POST).
func (c *Client) Write(ctx context.Context, path string, data map[string]any) (*api.Secret, error) {
	return c.do(ctx, path, func(ctx context.Context) (*api.Secret, error) {
		return c.api.Logical().WriteWithContext(ctx, path, data)
	})
}

// ErrNotFound is returned (wrapped) for a path Vault has nothing at.
var ErrNotFound = errors.New("not found in vault")

// ErrPermissionDenied is returned (wrapped) when Vault refuses a request even after a fresh login:
// the policy does not allow it.
var ErrPermissionDenied = errors.New("vault: permission denied")

// do runs op with the request timeout. A 403 means the token expired or was revoked (or the
// policy forbids the request): it logs in again once and retries.
func (c *Client) do(ctx context.Context, path string, op func(context.Context) (*api.Secret, error)) (*api.Secret, error) {
	for attempt := 0; ; attempt++ {
		gen := c.gen.Load()
		rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		s, err := op(rctx)
		cancel()
		if err == nil {
			return s, nil
		}
		if !errors.Is(err, ErrNotFound) {
			c.failures.Add(1)
		}
		if !isForbidden(err) {
			return nil, fmt.Errorf("vault %s: %w", path, err)
		}
		if attempt > 0 {
			return nil, fmt.Errorf("vault %s: %w (%w)", path, ErrPermissionDenied, err)
		}
		lctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		lerr := c.relogin(lctx, gen)
		cancel()
		if lerr != nil {
			return nil, fmt.Errorf("vault %s: token refused and re-login failed: %w", path, lerr)
		}
	}
}

func isForbidden(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusForbidden
}
