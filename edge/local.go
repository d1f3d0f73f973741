package edge

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"

	"github.com/calx-iiot/calx/uns"
)

// LocalBroker is the edge's own MQTT broker on site. Every value that
// passes report-by-exception is published on it, retained, as UNS JSON on
// uns/<path>, for consumers on site; devices on site publish their own
// topics to it, which the MQTT-in connector reads by default. uns/ is the
// edge's alone: clients may subscribe to it and never publish there. It is
// not on the path to the cloud, so a slow consumer here can lose updates
// (mochi counts them) but never a value of the historian.
type LocalBroker struct {
	srv *mqtt.Server
	tcp *listeners.TCP
	log *slog.Logger

	// The account the edge's own MQTT-in connectors use when the broker
	// asks for credentials.
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

// siteAccess is the edge broker's access: without accounts, any client on
// site may connect, subscribe, and publish anywhere but under uns/; with
// accounts, a client needs one, and its role says what it may do.
type siteAccess struct {
	mqtt.HookBase
	users map[string]LocalUser
}

func (siteAccess) ID() string { return "calx-edge-site-access" }
func (siteAccess) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}
func (a siteAccess) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if len(a.users) == 0 {
		return true
	}
	u, ok := a.users[string(pk.Connect.Username)]
	return ok && bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), pk.Connect.Password) == nil
}
func (a siteAccess) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if !write {
		return true
	}
	if topic == "uns" || strings.HasPrefix(topic, "uns/") {
		return false
	}
	if len(a.users) == 0 {
		return true
	}
	return a.users[string(cl.Properties.Username)].Role == LocalDevice
}

// StartLocalBroker listens on addr; with users, every client needs an account.
func StartLocalBroker(addr string, users []LocalUser, log *slog.Logger) (*LocalBroker, error) {
	lb := &LocalBroker{log: log.With("component", "local-broker")}
	// Each tag's retained UNS value stays until the tag changes, however
	// long that takes (the library drops retained messages after a day).
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumMessageExpiryInterval = 0
	lb.srv = mqtt.New(&mqtt.Options{InlineClient: true, Capabilities: caps, Logger: lb.log})
	access := siteAccess{users: map[string]LocalUser{}}
	for _, u := range users {
		if u.Role != LocalReader && u.Role != LocalDevice {
			return nil, fmt.Errorf("edge mqtt user %s: role %q: want %s or %s", u.Username, u.Role, LocalReader, LocalDevice)
		}
		if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
			return nil, fmt.Errorf("edge mqtt user %s: password_hash is not a bcrypt hash", u.Username)
		}
		access.users[u.Username] = u
	}
	if len(users) > 0 {
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
	}
	if err := lb.srv.AddHook(&access, nil); err != nil {
		return nil, err
	}
	lb.tcp = listeners.NewTCP(listeners.Config{ID: "uns", Address: addr})
	if err := lb.srv.AddListener(lb.tcp); err != nil {
		return nil, fmt.Errorf("edge mqtt %s: %w", addr, err)
	}
	if err := lb.srv.Serve(); err != nil {
		return nil, fmt.Errorf("edge mqtt %s: %w", addr, err)
	}
	return lb, nil
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

// unsJSON is the UNS payload on MQTT.
type unsJSON struct {
	Value   any    `json:"value"`
	TS      string `json:"ts"`
	Quality string `json:"quality"`
	Unit    string `json:"unit,omitempty"`
}

func (lb *LocalBroker) publish(m *metric, s uns.Sample) {
	b, err := json.Marshal(unsJSON{Value: s.Value.Any(), TS: s.TS.UTC().Format(time.RFC3339Nano), Quality: s.Quality.String(), Unit: m.def.Unit})
	if err == nil {
		err = lb.srv.Publish("uns/"+string(s.Path), b, true, 0)
	}
	if err != nil {
		lb.log.Warn("UNS publish failed", "path", s.Path, "err", err)
	}
}

// Close stops the broker.
func (lb *LocalBroker) Close() error { return lb.srv.Close() }
