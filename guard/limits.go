package guard

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/calx-iiot/calx/config"
)

// Defaults of Limits.
const (
	DefaultMaxConnections        = 10000
	DefaultMaxPerAddress         = 200
	DefaultConnectTimeout        = 5 * time.Second
	DefaultMaxConnectPacket      = 64 << 10
	DefaultMaxPacketSize         = 8 << 20
	DefaultMaxSessionExpiry      = time.Hour
	DefaultMaxQueuedMessages     = 1000
	DefaultMaxPendingWrites      = 8192
	DefaultMaxRetained           = 10000
	DefaultMaxSessionsPerAccount = 100
)

// Limits bound what clients may make a broker hold, before and after
// they authenticate (mqtt.limits in a config file); zero values take the
// defaults.
type Limits struct {
	// MaxConnections bounds the open connections, authenticated or not.
	MaxConnections int `yaml:"max_connections"`
	// MaxPerAddress bounds the open connections from one IP address.
	MaxPerAddress int `yaml:"max_connections_per_address"`
	// ConnectTimeout is how long a new connection has to complete its TLS
	// handshake and send its CONNECT packet.
	ConnectTimeout config.Duration `yaml:"connect_timeout"`
	// MaxConnectPacket bounds the first packet, which must be a CONNECT.
	MaxConnectPacket config.Size `yaml:"max_connect_packet"`
	// MaxPacketSize bounds every packet of an authenticated client; a
	// larger one ends the connection before its body is read.
	MaxPacketSize config.Size `yaml:"max_packet_size"`
	// MaxSessionExpiry bounds how long a disconnected client's session
	// (its subscriptions and queued messages) is kept.
	MaxSessionExpiry config.Duration `yaml:"max_session_expiry"`
	// MaxQueuedMessages bounds the QoS 1 and 2 messages a session holds
	// unacknowledged, connected or not; past it, more are dropped for that
	// session and counted.
	MaxQueuedMessages int `yaml:"max_queued_messages"`
	// MaxPendingWrites bounds the messages waiting to be written to one
	// connection; past it, more are dropped for that client and counted
	// (a slow subscriber loses messages rather than the broker its
	// memory). A session kept after a disconnect keeps what was waiting.
	MaxPendingWrites int `yaml:"max_pending_writes"`
	// MaxSessionsPerAccount bounds the sessions, connected or kept, of
	// one user name.
	MaxSessionsPerAccount int `yaml:"max_sessions_per_account"`
	// MaxRetained bounds the topics clients keep a retained message on
	// (the broker's own, such as UNS values, do not count); past it, a
	// message on a new topic is delivered but not retained, and counted.
	MaxRetained int `yaml:"max_retained"`
}

// WithDefaults fills zero values.
func (l Limits) WithDefaults() Limits {
	l.MaxConnections = cmp.Or(l.MaxConnections, DefaultMaxConnections)
	l.MaxPerAddress = cmp.Or(l.MaxPerAddress, DefaultMaxPerAddress)
	l.ConnectTimeout = cmp.Or(l.ConnectTimeout, config.Duration(DefaultConnectTimeout))
	l.MaxConnectPacket = cmp.Or(l.MaxConnectPacket, DefaultMaxConnectPacket)
	l.MaxPacketSize = cmp.Or(l.MaxPacketSize, DefaultMaxPacketSize)
	l.MaxSessionExpiry = cmp.Or(l.MaxSessionExpiry, config.Duration(DefaultMaxSessionExpiry))
	l.MaxQueuedMessages = cmp.Or(l.MaxQueuedMessages, DefaultMaxQueuedMessages)
	l.MaxPendingWrites = cmp.Or(l.MaxPendingWrites, DefaultMaxPendingWrites)
	l.MaxSessionsPerAccount = cmp.Or(l.MaxSessionsPerAccount, DefaultMaxSessionsPerAccount)
	l.MaxRetained = cmp.Or(l.MaxRetained, DefaultMaxRetained)
	return l
}

// Validate checks the limits; each error names its key.
func (l Limits) Validate() error {
	var errs []error
	check := func(bad bool, key string, v any, want string) {
		if bad {
			errs = append(errs, fmt.Errorf("limits.%s: %v: want %s", key, v, want))
		}
	}
	check(l.MaxConnections < 0, "max_connections", l.MaxConnections, "0 (the default) or more")
	check(l.MaxPerAddress < 0, "max_connections_per_address", l.MaxPerAddress, "0 (the default) or more")
	check(l.ConnectTimeout.Std() > time.Minute, "connect_timeout", l.ConnectTimeout.Std(), "up to 1m")
	check(l.MaxConnectPacket < 0 || l.MaxConnectPacket > 1<<20, "max_connect_packet", l.MaxConnectPacket, "up to 1MiB")
	check(l.MaxPacketSize < 0 || l.MaxPacketSize > 256<<20, "max_packet_size", l.MaxPacketSize, "up to 256MiB")
	check(l.MaxSessionExpiry.Std() > 7*24*time.Hour, "max_session_expiry", l.MaxSessionExpiry.Std(), "up to 168h")
	check(l.MaxQueuedMessages < 0 || l.MaxQueuedMessages > 65535, "max_queued_messages", l.MaxQueuedMessages, "up to 65535")
	check(l.MaxPendingWrites < 0 || l.MaxPendingWrites > 1<<20, "max_pending_writes", l.MaxPendingWrites, "up to 1048576")
	check(l.MaxSessionsPerAccount < 0, "max_sessions_per_account", l.MaxSessionsPerAccount, "0 (the default) or more")
	check(l.MaxRetained < 0, "max_retained", l.MaxRetained, "0 (the default) or more")
	return errors.Join(errs...)
}

// Apply sets the broker capabilities the limits map to.
func (l Limits) Apply(caps *mqtt.Capabilities) {
	l = l.WithDefaults()
	caps.MaximumPacketSize = uint32(l.MaxPacketSize)
	caps.MaximumSessionExpiryInterval = uint32(l.MaxSessionExpiry.Std() / time.Second)
	caps.MaximumInflight = uint16(l.MaxQueuedMessages)
	caps.MaximumClientWritesPending = int32(l.MaxPendingWrites)
}

// Hook enforces the limits mochi's capabilities do not: sessions per
// account and retained topics of clients; and counts the packets refused
// for their size.
type Hook struct {
	mqtt.HookBase
	srv    *mqtt.Server
	limits Limits
	log    *slog.Logger

	rmu      sync.Mutex
	retained map[string]struct{} // topics clients keep a retained message on

	tooLarge, sessionsRefused, retainRefused atomic.Uint64
}

// NewHook returns the hook for srv, which it must be added to.
func NewHook(srv *mqtt.Server, l Limits, log *slog.Logger) *Hook {
	return &Hook{srv: srv, limits: l.WithDefaults(), log: log.With("hook", "limits"), retained: map[string]struct{}{}}
}

// ID names the hook.
func (h *Hook) ID() string { return "calx-limits" }

// Provides says which events the hook handles.
func (h *Hook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnect, mqtt.OnDisconnect, mqtt.OnPublish, mqtt.OnWill}, []byte{b})
}

// ErrSessionCap is why a client is refused when its account holds its
// MaxSessionsPerAccount sessions.
var ErrSessionCap = errors.New("the account's session cap is reached")

// OnConnect refuses a client whose account already holds its cap of
// sessions, connected or kept; resuming or taking over a session of the
// same client id adds none.
func (h *Hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	user := string(pk.Connect.Username)
	n := 0
	for id, other := range h.srv.Clients.GetAll() {
		if id != cl.ID && !other.Net.Inline && string(other.Properties.Username) == user {
			n++
		}
	}
	if n < h.limits.MaxSessionsPerAccount {
		return nil
	}
	h.sessionsRefused.Add(1)
	h.log.Warn("client refused: its account's session cap is reached", "remote", cl.Net.Remote, "sessions", n, "max_sessions_per_account", h.limits.MaxSessionsPerAccount)
	_ = h.srv.SendConnack(cl, packets.ErrQuotaExceeded, false, nil)
	return fmt.Errorf("%w: %w", ErrSessionCap, packets.ErrQuotaExceeded)
}

// OnDisconnect counts the clients ended for a packet over the size limit.
func (h *Hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	if errors.Is(err, packets.ErrPacketTooLarge) {
		h.tooLarge.Add(1)
		h.log.Warn("client ended: packet over the size limit", "client", cl.ID, "remote", cl.Net.Remote, "max_packet_size", h.limits.MaxPacketSize)
	}
}

// OnPublish keeps a client's retained message only while the clients'
// retained topics are under their cap.
func (h *Hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Retain && !cl.Net.Inline {
		pk.FixedHeader.Retain = h.mayRetain(cl, pk.TopicName, len(pk.Payload) == 0)
	}
	return pk, nil
}

// OnWill holds a Will to the same cap.
func (h *Hook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if will.Retain {
		will.Retain = h.mayRetain(cl, will.TopicName, len(will.Payload) == 0)
	}
	return will, nil
}

func (h *Hook) mayRetain(cl *mqtt.Client, topic string, clear bool) bool {
	h.rmu.Lock()
	defer h.rmu.Unlock()
	if clear {
		delete(h.retained, topic)
		return true
	}
	if _, ok := h.retained[topic]; ok {
		return true
	}
	if len(h.retained) >= h.limits.MaxRetained {
		if h.retainRefused.Add(1)%1000 == 1 {
			h.log.Warn("retained message not kept: the clients' retained topics are at their cap", "client", cl.ID, "topic", topic, "max_retained", h.limits.MaxRetained)
		}
		return false
	}
	h.retained[topic] = struct{}{}
	return true
}

// HookStats are the hook's counters.
type HookStats struct {
	PacketsTooLarge uint64
	SessionsRefused uint64
	RetainRefused   uint64
	Retained        int // topics clients keep a retained message on
}

// Stats returns the hook's counters.
func (h *Hook) Stats() HookStats {
	h.rmu.Lock()
	n := len(h.retained)
	h.rmu.Unlock()
	return HookStats{PacketsTooLarge: h.tooLarge.Load(), SessionsRefused: h.sessionsRefused.Load(), RetainRefused: h.retainRefused.Load(), Retained: n}
}
