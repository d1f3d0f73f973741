// Package guard owns the limits an MQTT broker of Calx puts in front of its
// clients: a TCP (or TLS) listener for mochi with caps on connections, a
// deadline and a size bound on the first packet before a client has
// authenticated, and an accept loop that outlives accept errors; and a hook
// that caps packets, sessions and what a session may have queued. The
// cloud's broker and the edge's site broker both use it. It knows nothing
// of Sparkplug or accounts' roles.
package guard

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

const (
	maxAcceptBackoff         = time.Second
	firstAcceptBackoff       = 5 * time.Millisecond
	acceptErrorLogInterval   = 10 * time.Second
	acceptErrorReadyInterval = 2 * time.Second
)

// ListenerOptions configure a Listener.
type ListenerOptions struct {
	// ID names the listener to mochi and in logs.
	ID string
	// Address to listen on, host:port.
	Address string
	// TLS, when set, makes it MQTT over TLS.
	TLS *tls.Config
	// Limits: the listener applies the connection caps, the CONNECT
	// deadline and the bound on the first packet.
	Limits Limits
	Logger *slog.Logger
}

// Stats are a listener's counters.
type Stats struct {
	Open            int64  // connections open now
	Accepted        uint64 // connections taken
	RefusedTotal    uint64 // closed at once: MaxConnections reached
	RefusedAddress  uint64 // closed at once: MaxPerAddress reached
	ConnectTimeouts uint64 // no complete CONNECT within ConnectTimeout
	BadFirstPacket  uint64 // first packet not a CONNECT, or over MaxConnectPacket
	AcceptErrors    uint64 // failed accepts, each followed by a pause
}

// Listener is a mochi listener with Calx's limits. It satisfies
// listeners.Listener.
type Listener struct {
	opts ListenerOptions
	log  *slog.Logger

	caps *Caps

	mu     sync.Mutex
	ln     net.Listener
	closed bool
	done   chan struct{} // closed when Serve returns
	// conns are the connections admitted and not closed: Close closes
	// those the broker did not know of yet (accepted while it closed its
	// clients), which would otherwise hold its shutdown.
	conns map[*guardedConn]struct{}

	timeouts, badFirst, acceptErrs atomic.Uint64
	lastAcceptErr                  atomic.Pointer[acceptErr]
}

type acceptErr struct {
	at  time.Time
	err error
}

var _ listeners.Listener = (*Listener)(nil)

// NewListener validates opts; nothing listens before Init.
func NewListener(opts ListenerOptions) (*Listener, error) {
	if opts.Address == "" {
		return nil, errors.New("guard: listen address required")
	}
	if err := opts.Limits.Validate(); err != nil {
		return nil, fmt.Errorf("guard: listener %s: %w", opts.ID, err)
	}
	opts.Limits = opts.Limits.WithDefaults()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	log := opts.Logger.With("listener", opts.ID)
	return &Listener{opts: opts, log: log, caps: NewCaps(opts.Limits.MaxConnections, opts.Limits.MaxPerAddress, log), done: make(chan struct{})}, nil
}

// ID is the listener's id.
func (l *Listener) ID() string { return l.opts.ID }

// Protocol is tcp.
func (l *Listener) Protocol() string { return "tcp" }

// Address is the bound address once listening, else the configured one.
func (l *Listener) Address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.opts.Address
}

// Init opens the address.
func (l *Listener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.opts.Address)
	if err != nil {
		return fmt.Errorf("guard: listen %s: %w", l.opts.Address, err)
	}
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	return nil
}

// Serve accepts connections until Close. An accept that fails (out of
// file descriptors, for one) is counted and followed by a pause that
// doubles up to a second, and the loop goes on.
func (l *Listener) Serve(establish listeners.EstablishFn) {
	defer close(l.done)
	l.mu.Lock()
	ln := l.ln
	l.mu.Unlock()
	if ln == nil {
		return
	}
	backoff := time.Duration(0)
	var lastLog time.Time
	for {
		conn, err := ln.Accept()
		if err != nil {
			if l.isClosed() {
				return
			}
			l.acceptErrs.Add(1)
			l.lastAcceptErr.Store(&acceptErr{at: time.Now(), err: err})
			backoff = min(max(2*backoff, firstAcceptBackoff), maxAcceptBackoff)
			if time.Since(lastLog) > acceptErrorLogInterval {
				lastLog = time.Now()
				l.log.Error("accept failed; retrying", "err", err, "pause", backoff)
			}
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		l.lastAcceptErr.Store(nil)
		gc, ok := l.admit(conn)
		if !ok {
			conn.Close()
			continue
		}
		go func() {
			if err := establish(l.opts.ID, gc); err != nil {
				l.log.Debug("client ended", "remote", conn.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// admit counts a new connection against the caps and wraps it.
func (l *Listener) admit(conn net.Conn) (net.Conn, bool) {
	if l.isClosed() {
		return nil, false
	}
	counted, ok := l.caps.Admit(conn)
	if !ok {
		return nil, false
	}
	_ = conn.SetDeadline(time.Now().Add(l.opts.Limits.ConnectTimeout.Std()))
	inner := counted
	if l.opts.TLS != nil {
		inner = tls.Server(counted, l.opts.TLS)
	}
	gc := &guardedConn{Conn: inner, l: l}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		gc.Conn.Close()
		return nil, false
	}
	if l.conns == nil {
		l.conns = map[*guardedConn]struct{}{}
	}
	l.conns[gc] = struct{}{}
	return gc, true
}

// forget drops a closed connection from conns.
func (l *Listener) forget(gc *guardedConn) {
	l.mu.Lock()
	delete(l.conns, gc)
	l.mu.Unlock()
}

func (l *Listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Close stops accepting and closes every client of the listener.
func (l *Listener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	already := l.closed
	l.closed = true
	ln := l.ln
	l.mu.Unlock()
	if already {
		return
	}
	closeClients(l.opts.ID)
	if ln != nil {
		ln.Close()
		<-l.done
	}
	// No connection is admitted any more: close those the broker's
	// clients did not cover.
	l.mu.Lock()
	left := make([]*guardedConn, 0, len(l.conns))
	for gc := range l.conns {
		left = append(left, gc)
	}
	l.mu.Unlock()
	for _, gc := range left {
		gc.Close()
	}
}

// Err says why the listener cannot take clients now: closed, or its
// accepts failing (within the last two seconds); nil when it can.
func (l *Listener) Err() error {
	if l.isClosed() {
		return fmt.Errorf("listener %s: closed", l.opts.ID)
	}
	if e := l.lastAcceptErr.Load(); e != nil && time.Since(e.at) < acceptErrorReadyInterval {
		return fmt.Errorf("listener %s: accept failing: %w", l.opts.ID, e.err)
	}
	return nil
}

// Stats returns the listener's counters.
func (l *Listener) Stats() Stats {
	c := l.caps.Stats()
	return Stats{Open: c.Open, Accepted: c.Accepted, RefusedTotal: c.RefusedTotal, RefusedAddress: c.RefusedAddress,
		ConnectTimeouts: l.timeouts.Load(), BadFirstPacket: l.badFirst.Load(), AcceptErrors: l.acceptErrs.Load()}
}
