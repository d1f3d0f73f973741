package guard

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
)

// Caps bounds the open connections of a listener, in all and per client
// address. Connections it admits count until closed.
type Caps struct {
	max, perAddr int
	log          *slog.Logger

	mu     sync.Mutex
	byAddr map[string]int
	open   int64

	accepted, refusedTotal, refusedAddr atomic.Uint64
}

// NewCaps returns caps of max connections and perAddr from one address.
func NewCaps(max, perAddr int, log *slog.Logger) *Caps {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Caps{max: max, perAddr: perAddr, log: log, byAddr: map[string]int{}}
}

// Admit counts conn, or says it is over a cap (the caller closes it).
func (c *Caps) Admit(conn net.Conn) (net.Conn, bool) {
	host := remoteHost(conn)
	c.mu.Lock()
	switch {
	case c.open >= int64(c.max):
		c.mu.Unlock()
		if c.refusedTotal.Add(1)%1000 == 1 {
			c.log.Warn("connection refused: the listener's connection cap is reached", "remote", host, "max_connections", c.max)
		}
		return nil, false
	case c.byAddr[host] >= c.perAddr:
		c.mu.Unlock()
		if c.refusedAddr.Add(1)%1000 == 1 {
			c.log.Warn("connection refused: the address's connection cap is reached", "remote", host, "max_per_address", c.perAddr)
		}
		return nil, false
	}
	c.byAddr[host]++
	c.open++
	c.mu.Unlock()
	c.accepted.Add(1)
	return &countedConn{Conn: conn, c: c, host: host}, true
}

func (c *Caps) release(host string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byAddr[host]--; c.byAddr[host] <= 0 {
		delete(c.byAddr, host)
	}
	c.open--
}

// CapsStats are the caps' counters.
type CapsStats struct {
	Open                         int64
	Accepted                     uint64
	RefusedTotal, RefusedAddress uint64
}

// Stats returns the counters.
func (c *Caps) Stats() CapsStats {
	c.mu.Lock()
	open := c.open
	c.mu.Unlock()
	return CapsStats{Open: open, Accepted: c.accepted.Load(), RefusedTotal: c.refusedTotal.Load(), RefusedAddress: c.refusedAddr.Load()}
}

// countedConn releases its place in the caps once, when closed.
type countedConn struct {
	net.Conn
	c    *Caps
	host string
	once sync.Once
}

func (cc *countedConn) Close() error {
	err := cc.Conn.Close()
	cc.once.Do(func() { cc.c.release(cc.host) })
	return err
}

// LimitListener is a net.Listener whose connections count against caps;
// one over a cap is closed as soon as it is accepted.
func LimitListener(ln net.Listener, caps *Caps) net.Listener {
	return &limitListener{Listener: ln, caps: caps}
}

type limitListener struct {
	net.Listener
	caps *Caps
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if c, ok := l.caps.Admit(conn); ok {
			return c, nil
		}
		conn.Close()
	}
}

func remoteHost(c net.Conn) string {
	addr := c.RemoteAddr().String()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}
