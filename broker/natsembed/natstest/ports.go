package natstest

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// FreePort returns a loopback port for a NATS node that must listen on a port fixed in advance
// (route URLs in cluster configuration files, a node restarted on its old ports). The port is free
// now and is one the kernel does not hand out on its own: a node binds its ports only when it
// starts, which for a node started late in a test is seconds after they were chosen, and a port from
// the ephemeral range (what listening on port 0 gives) can be taken meanwhile by any outgoing
// connection of the tests running in parallel; the node then never becomes ready ("node 3 not
// ready", one run of the whole suite in a few). Ports below the ephemeral range are taken only by
// someone who asks for them by number, and FreePort never gives out the same port twice in one
// process.
//
// Where nothing needs the port in advance, listen on port -1 (the server picks) instead.
func FreePort(t testing.TB) int {
	t.Helper()
	low := 32768 // Linux's default start of the ephemeral range
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	const from = 10000
	if low <= from+1000 {
		t.Fatalf("ephemeral ports start at %d: no room below them for fixed test ports", low)
	}
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		p := from + rand.IntN(low-from)
		if portsTaken[p] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		_ = l.Close()
		portsTaken[p] = true
		return p
	}
	t.Fatalf("no free port between %d and %d", from, low)
	return 0
}

// portsTaken are the ports FreePort gave out in this process: never twice, as a stopped node keeps
// its ports for its restart.
var (
	portsMu    sync.Mutex
	portsTaken = map[int]bool{}
)
