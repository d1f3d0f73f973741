package edge

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"

	"github.com/calx-iiot/calx/guard"
	"github.com/calx-iiot/calx/uns"
)

// LocalBroker is the edge's own MQTT broker on site. Every value that
// passes report-by-exception is published on it, retained, as UNS JSON on
// uns/<path>, for consumers on site; devices on site publish their own
// topics to it, which the MQTT-in connector reads by default. uns/ is the
// edge's alone: clients may subscribe to it and never publish there. It is
// not on the path to the cloud, so a slow consumer here can lose updates
// (mochi counts them) but never a value of the historian. It has the
// cloud broker's limits (guard).
type LocalBroker struct {
	srv    *mqtt.Server
	tcp    *guard.Listener
	limits *guard.Hook
	log    *slog.Logger
	opts   LocalBrokerOptions
	once   sync.Once

	// The account the edge's own MQTT-in connectors use.
	internalUser, internalPass string
}

// Roles of accounts on the edge's own broker.
const (
	LocalReader = "reader" // subscribe to anything, publish nothing
	LocalDevice = "device" // subscribe to anything, publish anywhere but uns/
)

// LocalUser is an account on the edge's own broker; the password is kept as
// a bcrypt hash.
type LocalUser struct {
	Username     string `yaml:"username"`
	PasswordHash string `yaml:"password_hash"`
	Role         string `yaml:"role"`
}

// siteAccess is the edge broker's access: a client needs an account, and
// its role says what it may do; with anonymous access allowed, a client
// without a user name may subscribe, and publish anywhere but under uns/.
// A Will passes the same check as a publish.
type siteAccess struct {
	mqtt.HookBase
	users     map[string]LocalUser
	anonymous bool
	logins    *guard.Logins
	log       *slog.Logger
}

func (*siteAccess) ID() string { return "calx-edge-site-access" }
func (*siteAccess) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}
func (a *siteAccess) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	name := string(pk.Connect.Username)
	if name == "" && a.anonymous {
		return !pk.Connect.WillFlag || a.mayPublish("", pk.Connect.WillTopic)
	}
	u, known := a.users[name]
	if ok, throttled := a.logins.Check(cl.Net.Remote, name, u.PasswordHash, pk.Connect.Password); !ok {
		a.log.Warn("site broker login refused", "remote", cl.Net.Remote, "known_user", known, "throttled", throttled)
		return false
	}
	if pk.Connect.WillFlag && !a.mayPublish(name, pk.Connect.WillTopic) {
		a.log.Warn("site broker login refused: will topic not allowed", "username", name, "topic", pk.Connect.WillTopic)
		return false
	}
	return true
}
func (a *siteAccess) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	return !write || a.mayPublish(string(cl.Properties.Username), topic)
}

// mayPublish is the publish ACL: never under uns/; an account needs the
// device role, a client without one needs anonymous access.
func (a *siteAccess) mayPublish(user, topic string) bool {
	if topic == "uns" || strings.HasPrefix(topic, "uns/") {
		return false
	}
	if user == "" {
		return a.anonymous
	}
	return a.users[user].Role == LocalDevice
}

// LocalBrokerOptions configure the edge's own broker.
type LocalBrokerOptions struct {
	Listen string
	// Users are its accounts; AllowAnonymous lets clients in without one.
	Users          []LocalUser
	AllowAnonymous bool
	// TLS, when set, makes it MQTT over TLS.
	TLS    *tls.Config
	Limits guard.Limits
	Logger *slog.Logger
}

// NewLocalBroker checks opts and builds the broker; it listens once
// started.
func NewLocalBroker(opts LocalBrokerOptions) (*LocalBroker, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	lb := &LocalBroker{log: opts.Logger.With("component", "local-broker")}
	if err := opts.Limits.Validate(); err != nil {
		return nil, fmt.Errorf("edge mqtt: %w", err)
	}
	// Each tag's retained UNS value stays until the tag changes, however
	// long that takes (the library drops retained messages after a day).
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumMessageExpiryInterval = 0
	opts.Limits.Apply(caps)
	lb.srv = mqtt.New(&mqtt.Options{InlineClient: true, Capabilities: caps, Logger: lb.log})
	access := &siteAccess{users: map[string]LocalUser{}, anonymous: opts.AllowAnonymous, logins: guard.NewLogins(), log: lb.log}
	for _, u := range opts.Users {
		if u.Role != LocalReader && u.Role != LocalDevice {
			return nil, fmt.Errorf("edge mqtt user %s: role %q: want %s or %s", u.Username, u.Role, LocalReader, LocalDevice)
		}
		if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
			return nil, fmt.Errorf("edge mqtt user %s: password_hash is not a bcrypt hash", u.Username)
		}
		if u.Username == "" {
			return nil, errors.New("edge mqtt user: username required")
		}
		access.users[u.Username] = u
	}
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	lb.internalUser, lb.internalPass = "calx-edge-internal", base64.RawURLEncoding.EncodeToString(b)
	h, err := bcrypt.GenerateFromPassword([]byte(lb.internalPass), bcrypt.MinCost)
	if err != nil {
		return nil, err
	}
	access.users[lb.internalUser] = LocalUser{Username: lb.internalUser, PasswordHash: string(h), Role: LocalDevice}
	lb.limits = guard.NewHook(lb.srv, opts.Limits, lb.log)
	if err := lb.srv.AddHook(lb.limits, nil); err != nil {
		return nil, err
	}
	if err := lb.srv.AddHook(access, nil); err != nil {
		return nil, err
	}
	if lb.tcp, err = guard.NewListener(guard.ListenerOptions{ID: "uns", Address: opts.Listen, TLS: opts.TLS, Limits: opts.Limits, Logger: lb.log}); err != nil {
		return nil, fmt.Errorf("edge mqtt %s: %w", opts.Listen, err)
	}
	if err := lb.srv.AddListener(lb.tcp); err != nil {
		return nil, fmt.Errorf("edge mqtt %s: %w", opts.Listen, err)
	}
	lb.opts = opts
	return lb, nil
}

// Start listens and serves clients until Shutdown.
func (lb *LocalBroker) Start() error {
	if err := lb.srv.Serve(); err != nil {
		return fmt.Errorf("edge mqtt %s: %w", lb.opts.Listen, err)
	}
	if lb.opts.AllowAnonymous {
		lb.log.Warn("site broker takes anonymous clients (mqtt.allow_anonymous): any client that reaches it may read every value and publish outside uns/", "listen", lb.Addr())
	} else {
		lb.log.Info("site broker takes clients with an account only", "listen", lb.Addr(), "accounts", len(lb.opts.Users), "tls", lb.opts.TLS != nil)
	}
	return nil
}

// Addr is the address the broker listens on.
func (lb *LocalBroker) Addr() string { return lb.tcp.Address() }

// dialAddr is an address that reaches the broker from this machine.
func (lb *LocalBroker) dialAddr() string {
	host, port, err := net.SplitHostPort(lb.Addr())
	if err != nil {
		return lb.Addr()
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func (lb *LocalBroker) publish(m *metric, s uns.Sample) {
	b := uns.AppendPayloadJSON(nil, s, m.def.Unit, m.def.DataType)
	if err := lb.srv.Publish("uns/"+string(s.Path), b, true, 0); err != nil {
		lb.log.Warn("UNS publish failed", "path", s.Path, "err", err)
	}
}

// Shutdown stops the broker; safe to call twice, and before Start.
func (lb *LocalBroker) Shutdown(context.Context) error {
	var err error
	lb.once.Do(func() { err = lb.srv.Close() })
	return err
}
