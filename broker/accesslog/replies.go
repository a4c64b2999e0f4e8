package accesslog

import (
	"errors"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
)

// replies routes the responses of batched direct gets, which answer one request with many
// messages, to their requests over one long-lived wildcard subscription. A subscription per request
// would cost a SUB/UNSUB round and, with nats.go's synchronous subscriptions, a 64k-slot channel
// allocated each time, which dominated List's cost.
type replies struct {
	prefix string // "<inbox>." ; a request's reply subject is prefix + its token
	sub    *nats.Subscription

	mu      sync.Mutex
	next    uint64
	waiting map[string]chan *nats.Msg
}

func newReplies(nc *nats.Conn) (*replies, error) {
	r := &replies{prefix: nc.NewInbox() + ".", waiting: map[string]chan *nats.Msg{}}
	sub, err := nc.Subscribe(r.prefix+"*", r.deliver)
	if err != nil {
		return nil, err
	}
	// The server may send a whole batch at once; never drop part of it as a slow consumer.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		sub.Unsubscribe()
		return nil, err
	}
	r.sub = sub
	return r, nil
}

// open registers a request that expects at most max messages and returns its reply subject, the
// channel its messages arrive on, and the function that ends it.
func (r *replies) open(max int) (string, <-chan *nats.Msg, func()) {
	// Room for every message the request can produce (max and the end-of-batch marker), so deliver
	// never blocks the shared subscription on one slow reader.
	ch := make(chan *nats.Msg, max+1)
	r.mu.Lock()
	r.next++
	token := strconv.FormatUint(r.next, 36)
	r.waiting[token] = ch
	r.mu.Unlock()
	return r.prefix + token, ch, func() {
		r.mu.Lock()
		delete(r.waiting, token)
		r.mu.Unlock()
	}
}

func (r *replies) deliver(m *nats.Msg) {
	token := m.Subject[len(r.prefix):]
	r.mu.Lock()
	ch := r.waiting[token]
	r.mu.Unlock()
	if ch == nil {
		return // the request ended early; the rest of its batch is of no use
	}
	select {
	case ch <- m:
	default:
		// More than the request asked for: cannot happen with a well-behaved server. Dropping is
		// safe, the reader then times out.
	}
}

func (r *replies) close() error {
	if r == nil || r.sub == nil {
		return errors.New("no reply subscription")
	}
	return r.sub.Unsubscribe()
}
