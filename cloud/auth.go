package cloud

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"

	"github.com/calx-iiot/calx/guard"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
)

// Broker roles.
const (
	// RoleEdge may act only as the Sparkplug edge node named by its
	// credentials: publish its own births, deaths and data, subscribe to its
	// own commands and to host STATE.
	RoleEdge = "edge"
	// RoleReader may subscribe to everything and publish nothing.
	RoleReader = "reader"
)

// MQTTUser is one broker credential. Passwords are kept as bcrypt hashes.
type MQTTUser struct {
	Username     string   `json:"username"`
	PasswordHash string   `json:"password_hash"`
	Role         string   `json:"role"`
	Group        string   `json:"group,omitempty"`     // for RoleEdge
	EdgeID       string   `json:"edge_node,omitempty"` // for RoleEdge
	Publish      []string `json:"publish,omitempty"`   // for RoleCustom: topic filters it may publish to
	Subscribe    []string `json:"subscribe,omitempty"` // for RoleCustom: topic filters it may subscribe to
	// Scope, for RoleReader: the UNS prefixes whose uns/ topics it may
	// read, and nothing else; none is every topic.
	Scope []string `json:"scope,omitempty"`
}

// Validate checks a user entry.
func (u MQTTUser) Validate() error {
	if u.Username == "" {
		return errors.New("username: required")
	}
	if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
		return fmt.Errorf("user %s: password_hash is not a bcrypt hash: %w", u.Username, err)
	}
	switch u.Role {
	case RoleEdge:
		if err := uns.ValidateSegment(u.Group); err != nil {
			return fmt.Errorf("user %s: group %q: %w", u.Username, u.Group, err)
		}
		if err := uns.ValidateSegment(u.EdgeID); err != nil {
			return fmt.Errorf("user %s: edge_id %q: %w", u.Username, u.EdgeID, err)
		}
	case RoleReader:
		for i, p := range u.Scope {
			if err := uns.Path(p).Validate(); err != nil {
				return fmt.Errorf("user %s: scope[%d]: %w", u.Username, i, err)
			}
		}
	case RoleCustom:
		if len(u.Publish)+len(u.Subscribe) == 0 {
			return fmt.Errorf("user %s: no publish or subscribe filters", u.Username)
		}
		for _, f := range append(append([]string{}, u.Publish...), u.Subscribe...) {
			if err := ValidFilter(f); err != nil {
				return fmt.Errorf("user %s: %w", u.Username, err)
			}
		}
	default:
		return fmt.Errorf("user %s: role %q: want %s, %s or %s", u.Username, u.Role, RoleEdge, RoleReader, RoleCustom)
	}
	return nil
}

// HashPassword returns the bcrypt hash of a password.
func HashPassword(pw string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// authHook authenticates broker clients against hashed credentials and
// enforces the per-role topic ACLs. There is no anonymous access.
type authHook struct {
	mqtt.HookBase
	umu      sync.RWMutex
	users    map[string]MQTTUser
	fromAPI  map[string]bool     // accounts created through the API
	config   map[string]MQTTUser // the accounts of the config file, as written
	disabled map[string]bool
	log      *slog.Logger

	// verified caches a digest of the last password that passed bcrypt for a
	// user, so that a fleet reconnecting at once does not cost a bcrypt each.
	mu       sync.Mutex
	verified map[string]verifiedPassword
	denied   func()
	// logins throttles the bcrypt checks per address and user name.
	logins *guard.Logins
}

func newAuthHook(users []MQTTUser, log *slog.Logger, denied func()) *authHook {
	m := make(map[string]MQTTUser, len(users))
	config := make(map[string]MQTTUser, len(users))
	for _, u := range users {
		m[u.Username], config[u.Username] = u, u
	}
	return &authHook{users: m, config: config, fromAPI: map[string]bool{}, disabled: map[string]bool{}, log: log.With("hook", "auth"),
		verified: map[string]verifiedPassword{}, denied: denied, logins: guard.NewLogins()}
}

func (h *authHook) ID() string { return "calx-auth" }

// user is an enabled account.
func (h *authHook) user(name string) (MQTTUser, bool) {
	h.umu.RLock()
	defer h.umu.RUnlock()
	u, ok := h.users[name]
	return u, ok && !h.disabled[name]
}

// add adds a user; a name already taken is an error.
func (h *authHook) add(u MQTTUser, fromAPI bool) error {
	h.umu.Lock()
	defer h.umu.Unlock()
	if _, dup := h.users[u.Username]; dup {
		return fmt.Errorf("%w: %q", ErrUserExists, u.Username)
	}
	h.users[u.Username] = u
	h.fromAPI[u.Username] = fromAPI
	return nil
}

func (h *authHook) isDisabled(name string) bool {
	h.umu.RLock()
	defer h.umu.RUnlock()
	return h.disabled[name]
}

// forget drops the cached digest of a user's password.
func (h *authHook) forget(name string) {
	h.mu.Lock()
	delete(h.verified, name)
	h.mu.Unlock()
}

// ErrUserExists is returned when an MQTT username is taken.
var ErrUserExists = errors.New("MQTT username already exists")

func (h *authHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	name := string(pk.Connect.Username)
	u, known := h.user(name)
	if !known && h.isDisabled(name) {
		h.log.Warn("broker login refused: account disabled", "username", name, "remote", cl.Net.Remote)
		h.denied()
		return false
	}
	if cert := guard.VerifiedPeer(cl.Net.Conn); cert != nil {
		// A client certificate of the broker's client CA is the identity:
		// it names the account it may use, and no other.
		if !known || !certNames(cert, name) {
			h.log.Warn("broker login refused: the client certificate is not this account's", "username", name, "certificate", cert.Subject.CommonName, "remote", cl.Net.Remote)
			h.denied()
			return false
		}
	} else if ok, throttled := h.checkPassword(cl.Net.Remote, name, u, known, pk.Connect.Password); !ok {
		// An unknown name is not logged as typed: it may be a password
		// typed in the wrong field.
		logged := name
		if !known {
			logged = "(unknown)"
		}
		if throttled {
			h.log.Warn("broker login refused: too many failed logins from this address or for this user", "username", logged, "remote", cl.Net.Remote)
		} else {
			h.log.Warn("broker login refused", "username", logged, "remote", cl.Net.Remote)
		}
		h.denied()
		return false
	}
	if pk.Connect.WillFlag && !allowed(u, pk.Connect.WillTopic, true) {
		h.log.Warn("broker login refused: will topic not allowed", "username", name, "topic", pk.Connect.WillTopic)
		h.denied()
		return false
	}
	return true
}

// checkPassword checks a login: a password that passed bcrypt before is
// known by its digest, any other costs a bcrypt (an unknown user's too)
// within the throttle of its address and name.
func (h *authHook) checkPassword(remote, name string, u MQTTUser, known bool, pw []byte) (ok, throttled bool) {
	sum := sha256.Sum256(pw)
	if known {
		h.mu.Lock()
		prev, cached := h.verified[u.Username]
		h.mu.Unlock()
		// Only for the hash it was checked against: a password changed
		// or an account made again meanwhile needs a check of its own.
		if cached && prev.hash == u.PasswordHash && subtle.ConstantTimeCompare(prev.digest[:], sum[:]) == 1 {
			return true, false
		}
	}
	hash := ""
	if known {
		hash = u.PasswordHash
	}
	if ok, throttled = h.logins.Check(remote, name, hash, pw); !ok {
		return false, throttled
	}
	h.mu.Lock()
	h.verified[u.Username] = verifiedPassword{hash: u.PasswordHash, digest: sum}
	h.mu.Unlock()
	return true, false
}

// verifiedPassword is a password that passed bcrypt against hash, kept
// as its digest.
type verifiedPassword struct {
	hash   string
	digest [32]byte
}

func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	u, ok := h.user(string(cl.Properties.Username))
	if !ok || !allowed(u, topic, write) {
		h.denied()
		verb := "subscribe"
		if write {
			verb = "publish"
		}
		h.log.Warn("refused by the topic ACL", "client", cl.ID, "username", u.Username, "action", verb, "topic", topic)
		return false
	}
	return true
}

// reserved says whether a topic is the cloud's and the edges' alone to
// publish on: Sparkplug (the host's STATE and commands, for a command
// reaches a device only through the audited write path; an edge node's
// messages, which only its own edge account may send), Calx's receipts
// and configuration (calx/), and the UNS JSON it republishes (uns/). No
// other account publishes there, whatever its filters.
func reserved(topic string) bool {
	for _, p := range []string{"uns", sparkplug.Namespace, "calx"} {
		if topic == p || strings.HasPrefix(topic, p+"/") {
			return true
		}
	}
	return false
}

// allowed is the topic ACL of a user: topic is a topic name when write, a
// filter when subscribing.
func allowed(u MQTTUser, topic string, write bool) bool {
	// An edge's configuration may hold device passwords: it is that edge's
	// alone (and the cloud's, which publishes it as an inline client).
	if strings.HasPrefix(topic, sparkplug.ConfigPrefix) && (u.Role != RoleEdge || write) {
		return false
	}
	if write && u.Role != RoleEdge && reserved(topic) {
		return false
	}
	switch u.Role {
	case RoleReader:
		return !write && readerSees(u.Scope, topic)
	case RoleCustom:
		return customAllowed(u, topic, write)
	case RoleEdge:
		own := sparkplug.Namespace + "/" + u.Group + "/"
		if write {
			if topic == sparkplug.ConfigStatusTopic(u.Group, u.EdgeID) || topic == sparkplug.UpdateGetTopic(u.Group, u.EdgeID) {
				return true
			}
			t, err := sparkplug.ParseTopic(topic)
			if err != nil || t.Group != u.Group || t.Edge != u.EdgeID {
				return false
			}
			switch t.Type {
			case sparkplug.NBIRTH, sparkplug.NDEATH, sparkplug.NDATA, sparkplug.DBIRTH, sparkplug.DDEATH, sparkplug.DDATA:
				return true
			}
			return false
		}
		ncmd, dcmd := own+"NCMD/"+u.EdgeID, own+"DCMD/"+u.EdgeID+"/"
		switch {
		case topic == ncmd, topic == ncmd+"/#":
			return true
		case strings.HasPrefix(topic, dcmd):
			rest := strings.TrimPrefix(topic, dcmd)
			return rest == "+" || rest == "#" || (rest != "" && !strings.ContainsAny(rest, "/#+"))
		case strings.HasPrefix(topic, sparkplug.Namespace+"/STATE/"):
			return !strings.Contains(strings.TrimPrefix(topic, sparkplug.Namespace+"/STATE/"), "#")
		case topic == sparkplug.ReceiptTopic(u.Group, u.EdgeID), topic == sparkplug.ConfigTopic(u.Group, u.EdgeID),
			topic == sparkplug.UpdateTopic(u.Group, u.EdgeID), topic == sparkplug.UpdateChunkTopic(u.Group, u.EdgeID):
			return true
		}
	}
	return false
}

// certNames reports whether a client certificate names account: its
// subject's common name, or one of its DNS or URI names.
func certNames(cert *x509.Certificate, account string) bool {
	if account == "" {
		return false
	}
	if cert.Subject.CommonName == account || slices.Contains(cert.DNSNames, account) {
		return true
	}
	for _, u := range cert.URIs {
		if u.String() == account {
			return true
		}
	}
	return false
}
