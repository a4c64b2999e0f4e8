package natsembed

import (
	"crypto/tls"
	"errors"

	"github.com/nats-io/nats.go"
)

// ConnectTLSIfOffered connects to url with tlsConfig when the server offers TLS, and in the clear
// when it offers none and neither url (tls://) nor strict asks for it. nats.go since v1.56 treats a
// TLS configuration as a demand for TLS from every server, where the broker's connections have
// always used theirs only with servers that ask for TLS: a plain NATS on loopback stays usable, and
// the caller reports the unencrypted connection (see nats.Conn.TLSConnectionState). With strict (an
// operator named the servers' CA) a server without TLS is refused rather than spoken to in the clear.
// A nil tlsConfig connects as opts say.
func ConnectTLSIfOffered(url string, tlsConfig *tls.Config, strict bool, opts ...nats.Option) (*nats.Conn, error) {
	if tlsConfig == nil {
		return nats.Connect(url, opts...)
	}
	withTLS := append(opts[:len(opts):len(opts)], func(o *nats.Options) error { o.TLSConfig = tlsConfig; return nil })
	nc, err := nats.Connect(url, withTLS...)
	if err == nil || strict || !errors.Is(err, nats.ErrSecureConnWanted) {
		return nc, err
	}
	// A tls:// URL asks for TLS by itself, so this second try fails the same way for it.
	return nats.Connect(url, opts...)
}
