// Package store owns Calx's durable backbone: an embedded NATS server with
// JetStream file storage under the data dir, its streams and key-value
// buckets, and the way Calx consumes them: a durable consumer that resumes
// from its acknowledgement floor, and one loop (Loop) that acknowledges a
// batch only once its work is done. The DuckDB historian lives in
// store/historian so that only the packages that need DuckDB link it.
//
// It knows subjects and streams, not Sparkplug or the UNS model.
package store

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"
)

// Stream names and subject roots of the backbone.
const (
	// StreamSparkplug holds every Sparkplug message as it came off the broker.
	StreamSparkplug = "CALX_SPB"
	// SubjectSparkplug is the subject root of StreamSparkplug:
	// calx.spb.<group>.<edge>.
	SubjectSparkplug = "calx.spb"
	// StreamUNS holds batches of decoded UNS samples.
	StreamUNS = "CALX_UNS"
	// SubjectUNS is the subject root of StreamUNS: calx.uns.<group>.<edge>.
	SubjectUNS = "calx.uns"
)

// Options configure the embedded backbone.
type Options struct {
	// Dir is where JetStream keeps its files.
	Dir string
	// Listen is a host:port for NATS clients from outside the process; empty
	// means no network port at all. A port needs Users.
	Listen string
	// Users are the accounts of the port; the process's own connections
	// use an account of their own that only they can use.
	Users []NATSUser
	// TLS, when set, makes the port NATS over TLS.
	TLS *tls.Config
	// SyncInterval is how often JetStream fsyncs its files; what a power cut
	// can lose is at most this much. Zero means 1s.
	SyncInterval time.Duration
	// MaxBytes bounds each stream on disk; zero means 10 GiB.
	MaxBytes int64
	// MaxAge bounds how long a message stays in a stream; zero means 7 days.
	MaxAge time.Duration
	// Streams to create; nil means the cloud's (Sparkplug and UNS).
	Streams []jetstream.StreamConfig
	// Cluster, when set, makes the server a node of a NATS cluster whose
	// streams and buckets are replicated (cluster.go).
	Cluster *Cluster
	Logger  *slog.Logger
}

// NATSUser is an account of the backbone's NATS port. Without Publish and
// Subscribe it may subscribe to the UNS batches (calx.uns.>) and nothing
// else; JetStream, key-value buckets and other subjects need subjects of
// their own here ($JS.API.>, $KV.<bucket>.>, ...).
type NATSUser struct {
	Username     string   `yaml:"username"`
	PasswordHash string   `yaml:"password_hash"` // bcrypt
	Publish      []string `yaml:"publish"`
	Subscribe    []string `yaml:"subscribe"`
}

// Validate checks a NATS account.
func (u NATSUser) Validate() error {
	if u.Username == "" {
		return errors.New("username: required")
	}
	if u.Username == internalUser {
		return fmt.Errorf("username %q is the process's own", u.Username)
	}
	if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
		return fmt.Errorf("user %s: password_hash is not a bcrypt hash: %w", u.Username, err)
	}
	return nil
}

// internalUser is the account of the process's own connections.
const internalUser = "calx-internal"

// Limits of the NATS port.
const (
	natsMaxConn     = 1000
	natsAuthTimeout = 5 // seconds from connect to authentication
)

// Bus is the embedded NATS JetStream server and a client connection to it.
type Bus struct {
	opts     Options
	srv      *server.Server
	nc       *nats.Conn
	js       jetstream.JetStream
	log      *slog.Logger
	once     sync.Once
	internal string // password of internalUser
}

// NewBus validates opts and fills defaults.
func NewBus(opts Options) (*Bus, error) {
	if opts.Dir == "" {
		return nil, errors.New("bus: a storage dir is required")
	}
	if opts.SyncInterval == 0 {
		opts.SyncInterval = time.Second
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = 10 << 30
	}
	if opts.MaxAge == 0 {
		opts.MaxAge = 7 * 24 * time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Listen != "" && len(opts.Users) == 0 {
		return nil, fmt.Errorf("bus: a NATS port (%s) needs users: it is never open without authentication", opts.Listen)
	}
	for _, u := range opts.Users {
		if err := u.Validate(); err != nil {
			return nil, fmt.Errorf("bus: nats %w", err)
		}
	}
	if opts.Cluster != nil {
		if err := opts.Cluster.Validate(); err != nil {
			return nil, fmt.Errorf("bus: cluster: %w", err)
		}
	}
	pw := make([]byte, 24)
	if _, err := rand.Read(pw); err != nil {
		return nil, fmt.Errorf("bus: %w", err)
	}
	return &Bus{opts: opts, log: opts.Logger.With("component", "bus"), internal: base64.RawURLEncoding.EncodeToString(pw)}, nil
}

// users are the server's accounts: the process's own, for in-process
// connections alone, and the port's, for network connections alone.
func (b *Bus) users() []*server.User {
	out := []*server.User{{Username: internalUser, Password: b.internal,
		AllowedConnectionTypes: map[string]struct{}{jwt.ConnectionTypeInProcess: {}}}}
	for _, u := range b.opts.Users {
		perms := &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: u.Publish},
			Subscribe: &server.SubjectPermission{Allow: u.Subscribe},
		}
		if len(u.Publish)+len(u.Subscribe) == 0 {
			perms.Subscribe.Allow = []string{SubjectUNS + ".>"}
		}
		if len(perms.Publish.Allow) == 0 {
			perms.Publish.Deny = []string{">"}
		}
		if len(perms.Subscribe.Allow) == 0 {
			perms.Subscribe.Deny = []string{">"}
		}
		out = append(out, &server.User{Username: u.Username, Password: u.PasswordHash, Permissions: perms,
			AllowedConnectionTypes: map[string]struct{}{jwt.ConnectionTypeStandard: {}}})
	}
	return out
}

// Start runs the server, connects to it and makes sure the streams exist.
func (b *Bus) Start(ctx context.Context) error {
	if err := os.MkdirAll(b.opts.Dir, 0o700); err != nil {
		return fmt.Errorf("bus: %w", err)
	}
	so := &server.Options{
		ServerName:   "calx", // a node's own name in a cluster
		JetStream:    true,
		StoreDir:     filepath.Clean(b.opts.Dir),
		SyncInterval: b.opts.SyncInterval,
		NoSigs:       true,
		NoLog:        true,
		DontListen:   b.opts.Listen == "",
		MaxPayload:   8 << 20,
		Users:        b.users(),
		MaxConn:      natsMaxConn,
		AuthTimeout:  natsAuthTimeout,
		TLSConfig:    b.opts.TLS,
		TLS:          b.opts.TLS != nil,
		TLSTimeout:   natsAuthTimeout,
	}
	if b.opts.Listen != "" {
		host, port, err := net.SplitHostPort(b.opts.Listen)
		if err != nil {
			return fmt.Errorf("bus: listen %q: %w", b.opts.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return fmt.Errorf("bus: listen %q: bad port", b.opts.Listen)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		so.Host, so.Port = host, p
	}
	if b.opts.Cluster != nil {
		if err := b.opts.Cluster.serverOptions(so); err != nil {
			return fmt.Errorf("bus: %w", err)
		}
	}
	srv, err := server.NewServer(so)
	if err != nil {
		return fmt.Errorf("bus: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return errors.New("bus: JetStream did not become ready in 30s")
	}
	b.srv = srv
	nc, err := b.connect("calx", srv)
	if err != nil {
		srv.Shutdown()
		return fmt.Errorf("bus: connect: %w", err)
	}
	b.nc = nc
	if b.js, err = b.NewJetStream(nc); err != nil {
		b.Shutdown()
		return fmt.Errorf("bus: %w", err)
	}
	if b.opts.Cluster != nil {
		if err := b.waitQuorum(ctx); err != nil {
			b.Shutdown()
			return fmt.Errorf("bus: %w", err)
		}
	}
	streams := b.opts.Streams
	if streams == nil {
		streams = []jetstream.StreamConfig{
			{Name: StreamSparkplug, Subjects: []string{SubjectSparkplug + ".>"}},
			{Name: StreamUNS, Subjects: []string{SubjectUNS + ".>"}},
		}
	}
	for _, sc := range streams {
		sc.Storage = jetstream.FileStorage
		sc.Retention = jetstream.LimitsPolicy
		sc.Discard = jetstream.DiscardOld
		sc.MaxBytes = b.opts.MaxBytes
		sc.MaxAge = b.opts.MaxAge
		sc.MaxMsgSize = 8 << 20
		if _, err := b.js.CreateOrUpdateStream(ctx, sc); err != nil { // in a cluster, tried again (cluster.go)
			b.Shutdown()
			return fmt.Errorf("bus: stream %s: %w", sc.Name, err)
		}
	}
	b.log.Info("backbone ready", "dir", b.opts.Dir, "client_url", b.ClientURL())
	return nil
}

// JetStream returns the JetStream context of the bus's connection.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// PublishAsyncTimeout is how long an asynchronous publish waits for the
// backbone's acknowledgement before it fails (and is sent again, with its
// message id): in a cluster the node that leads a stream may die with a
// publish in hand, which it will never acknowledge.
const PublishAsyncTimeout = 10 * time.Second

// NewJetStream is the JetStream of another connection to the bus, made as
// the bus's own (in a cluster: replicated, its consumers the node's).
func (b *Bus) NewJetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(PublishAsyncTimeout))
	if err != nil {
		return nil, err
	}
	if c := b.opts.Cluster; c != nil {
		return clustered{JetStream: js, replicas: c.Replicas(), node: c.Node, wait: b.clusterWait()}, nil
	}
	return js, nil
}

// Conn returns the bus's NATS connection.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// Connect opens another in-process connection, for a component that wants
// its own flow control.
func (b *Bus) Connect(name string) (*nats.Conn, error) { return b.connect(name, b.srv) }

func (b *Bus) connect(name string, srv *server.Server) (*nats.Conn, error) {
	return nats.Connect("", nats.InProcessServer(srv), nats.Name(name), nats.UserInfo(internalUser, b.internal), nats.MaxReconnects(-1), b.errorHandler())
}

// errorHandler logs a client's asynchronous errors, such as a subscriber
// too slow for its messages (the subscription counts what it dropped).
func (b *Bus) errorHandler() nats.Option {
	return nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
		if sub != nil {
			b.log.Warn("backbone subscriber error", "client", nc.Opts.Name, "subject", sub.Subject, "err", err)
			return
		}
		b.log.Warn("backbone client error", "client", nc.Opts.Name, "err", err)
	})
}

// ClientURL is the NATS URL for outside clients, or "" when not listening.
func (b *Bus) ClientURL() string {
	if b.srv == nil || b.opts.Listen == "" {
		return ""
	}
	return b.srv.ClientURL()
}

// Shutdown closes the connection and stops the server; safe to call twice.
func (b *Bus) Shutdown() {
	b.once.Do(func() {
		if b.nc != nil {
			_ = b.nc.Drain()
			b.nc.Close()
		}
		if b.srv != nil {
			b.srv.Shutdown()
			b.srv.WaitForShutdown()
		}
	})
}

// Token makes s usable as one NATS subject token and as a part of a
// JetStream key-value key: every byte other than ASCII letters, digits, '-'
// and '_' is written as '=' and two hex digits.
func Token(s string) string {
	if s == "" {
		return "="
	}
	clean := true
	for i := 0; i < len(s); i++ {
		if needsEscape(s[i]) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsEscape(c) {
			fmt.Fprintf(&sb, "=%02X", c)
		} else {
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

func needsEscape(c byte) bool {
	return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_')
}

// Untoken is the inverse of Token.
func Untoken(s string) string {
	if s == "=" {
		return ""
	}
	if !strings.Contains(s, "=") {
		return s
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '=' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				sb.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		sb.WriteByte(s[i])
	}
	return sb.String()
}
