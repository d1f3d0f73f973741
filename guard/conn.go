package guard

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
)

// ErrFirstPacket is returned by a connection's Read when its first packet
// is not a CONNECT or announces more than the listener's MaxConnectPacket.
var ErrFirstPacket = errors.New("first packet refused")

// guardedConn is a client connection of a Listener: it counts against the
// listener's caps until closed, and reads the fixed header of the first
// packet as it passes, refusing anything but a CONNECT of bounded size
// before mochi allocates for it.
type guardedConn struct {
	net.Conn
	l *Listener

	header firstHeader // of the first packet, until done
}

// firstHeader reads an MQTT fixed header byte by byte: the packet type,
// then the remaining length in up to four bytes of seven bits each.
type firstHeader struct {
	n      int // bytes read
	length int
	shift  uint
	done   bool
}

// feed takes the next byte; it returns an error as soon as the header is
// known to be refused, and sets done once it is complete and accepted.
func (h *firstHeader) feed(b byte, maxLen int) error {
	if h.n == 0 {
		h.n++
		if b != 0x10 { // CONNECT, with its reserved flags zero
			return fmt.Errorf("%w: type byte %#02x, not a CONNECT", ErrFirstPacket, b)
		}
		return nil
	}
	h.n++
	h.length |= int(b&0x7f) << h.shift
	h.shift += 7
	if h.length > maxLen {
		return fmt.Errorf("%w: CONNECT of more than %d bytes", ErrFirstPacket, maxLen)
	}
	if b&0x80 == 0 {
		h.done = true
		return nil
	}
	if h.n == 5 {
		return fmt.Errorf("%w: malformed remaining length", ErrFirstPacket)
	}
	return nil
}

func (c *guardedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.header.done {
		for i := 0; i < n && !c.header.done; i++ {
			if herr := c.header.feed(p[i], int(c.l.opts.Limits.MaxConnectPacket)); herr != nil {
				c.l.badFirst.Add(1)
				c.Close()
				return 0, herr
			}
		}
		var ne net.Error
		if err != nil && errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
			c.l.timeouts.Add(1)
		}
	}
	return n, err
}

// VerifiedPeer is the leaf of the client certificate a connection of a
// Listener presented and the listener verified against its client CA, or
// nil (no TLS, no certificate, or none asked for).
func VerifiedPeer(conn net.Conn) *x509.Certificate {
	g, ok := conn.(*guardedConn)
	if !ok {
		return nil
	}
	tc, ok := g.Conn.(*tls.Conn)
	if !ok {
		return nil
	}
	st := tc.ConnectionState()
	if !st.HandshakeComplete || len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return nil
	}
	return st.VerifiedChains[0][0]
}

// Close closes the connection and lets its listener forget it.
func (c *guardedConn) Close() error {
	c.l.forget(c)
	return c.Conn.Close()
}
