package cloud

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/calx-iiot/calx/store"
)

// Revocation: an MQTT account can be disabled, enabled, deleted (one made
// through the API) or given a new password, and an edge node revoked as a
// whole; each ends the account's sessions at once. What changes an
// account from the config file is kept beside the API's accounts, as
// state.<username>, so that it holds across restarts.
const stateKeyPrefix = "state."

// accountState is what the API changed of an account.
type accountState struct {
	Disabled     bool   `json:"disabled,omitempty"`
	PasswordHash string `json:"password_hash,omitempty"`
}

// Errors of account management.
var (
	ErrNoAccount     = errors.New("no such MQTT account")
	ErrConfigAccount = errors.New("the account is defined in the config file")
)

// apply lays a stored state over an account.
func (h *authHook) apply(name string, st accountState) {
	h.umu.Lock()
	defer h.umu.Unlock()
	u, ok := h.users[name]
	if !ok {
		return
	}
	if st.PasswordHash != "" {
		u.PasswordHash = st.PasswordHash
		h.users[name] = u
	}
	h.disabled[name] = st.Disabled
}

// AccountInfo is an MQTT account as an administrator sees it.
type AccountInfo struct {
	Username  string   `json:"username"`
	Role      string   `json:"role"`
	Group     string   `json:"group,omitempty"`
	EdgeID    string   `json:"edge_node,omitempty"`
	Publish   []string `json:"publish,omitempty"`
	Subscribe []string `json:"subscribe,omitempty"`
	Source    string   `json:"source"` // config or api
	Disabled  bool     `json:"disabled"`
	Sessions  int      `json:"sessions"` // connected or kept
}

// MQTTAccounts lists every MQTT account, by name.
func (c *Cloud) MQTTAccounts() []AccountInfo {
	sessions := map[string]int{}
	for _, cl := range c.Broker.srv.Clients.GetAll() {
		if !cl.Net.Inline {
			sessions[string(cl.Properties.Username)]++
		}
	}
	h := c.Broker.auth
	h.umu.RLock()
	defer h.umu.RUnlock()
	out := make([]AccountInfo, 0, len(h.users))
	for name, u := range h.users {
		src := "config"
		if h.fromAPI[name] {
			src = "api"
		}
		out = append(out, AccountInfo{Username: name, Role: u.Role, Group: u.Group, EdgeID: u.EdgeID, Publish: u.Publish, Subscribe: u.Subscribe,
			Source: src, Disabled: h.disabled[name], Sessions: sessions[name]})
	}
	slices.SortFunc(out, func(a, b AccountInfo) int { return strings.Compare(a.Username, b.Username) })
	return out
}

func (c *Cloud) account(name string) (MQTTUser, bool, error) {
	h := c.Broker.auth
	h.umu.RLock()
	defer h.umu.RUnlock()
	u, ok := h.users[name]
	if !ok {
		return MQTTUser{}, false, fmt.Errorf("%w: %q", ErrNoAccount, name)
	}
	return u, h.fromAPI[name], nil
}

// saveState stores what the API changed of an account: in the account's
// own record for one made through the API, else as its state record.
func (c *Cloud) saveState(ctx context.Context, u MQTTUser, fromAPI bool, st accountState) error {
	var err error
	if fromAPI {
		if st.PasswordHash != "" {
			u.PasswordHash = st.PasswordHash
		}
		b, _ := json.Marshal(u)
		if _, err = c.accounts.Put(ctx, store.Token(u.Username), b); err == nil {
			b, _ = json.Marshal(accountState{Disabled: st.Disabled})
			_, err = c.accounts.Put(ctx, stateKeyPrefix+store.Token(u.Username), b)
		}
	} else {
		b, _ := json.Marshal(st)
		_, err = c.accounts.Put(ctx, stateKeyPrefix+store.Token(u.Username), b)
	}
	if err != nil {
		return fmt.Errorf("cloud: store account %s: %w", u.Username, err)
	}
	return nil
}

// currentState is the state record of an account as stored, or none.
func (c *Cloud) currentState(ctx context.Context, name string) accountState {
	var st accountState
	if e, err := c.accounts.Get(ctx, stateKeyPrefix+store.Token(name)); err == nil {
		_ = json.Unmarshal(e.Value(), &st)
	}
	return st
}

// SetMQTTUserDisabled disables or enables an account; disabling ends its
// sessions, connected or kept.
func (c *Cloud) SetMQTTUserDisabled(ctx context.Context, name string, disabled bool) error {
	u, fromAPI, err := c.account(name)
	if err != nil {
		return err
	}
	st := c.currentState(ctx, name)
	st.Disabled = disabled
	if err := c.saveState(ctx, u, fromAPI, st); err != nil {
		return err
	}
	c.Broker.auth.apply(name, st)
	if disabled {
		c.Broker.endSessions(name)
	}
	return nil
}

// RotateMQTTPassword gives an account a new generated password (returned
// once, stored hashed) and ends its sessions: the old password no longer
// works.
func (c *Cloud) RotateMQTTPassword(ctx context.Context, name string) (string, error) {
	u, fromAPI, err := c.account(name)
	if err != nil {
		return "", err
	}
	raw := make([]byte, 18)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	password := base64.RawURLEncoding.EncodeToString(raw)
	hash, err := HashPassword(password)
	if err != nil {
		return "", err
	}
	st := c.currentState(ctx, name)
	st.PasswordHash = hash
	if err := c.saveState(ctx, u, fromAPI, st); err != nil {
		return "", err
	}
	c.Broker.auth.apply(name, st)
	c.Broker.endSessions(name)
	return password, nil
}

// DeleteMQTTUser deletes an account made through the API and ends its
// sessions; one from the config file can only be disabled here.
func (c *Cloud) DeleteMQTTUser(ctx context.Context, name string) error {
	_, fromAPI, err := c.account(name)
	if err != nil {
		return err
	}
	if !fromAPI {
		return fmt.Errorf("%w: %q: disable it, or remove it from the file", ErrConfigAccount, name)
	}
	for _, key := range []string{store.Token(name), stateKeyPrefix + store.Token(name)} {
		if err := c.accounts.Purge(ctx, key); err != nil {
			return fmt.Errorf("cloud: delete account %s: %w", name, err)
		}
	}
	h := c.Broker.auth
	h.umu.Lock()
	delete(h.users, name)
	delete(h.fromAPI, name)
	delete(h.disabled, name)
	h.umu.Unlock()
	c.Broker.endSessions(name)
	return nil
}

// RevokeEdge takes an edge node off the cloud: its accounts made through
// the API are deleted, those of the config file disabled, their sessions
// ended, and the host forgets the node (its births, so that its tags may
// be defined by another node). It returns the accounts it revoked.
func (c *Cloud) RevokeEdge(ctx context.Context, group, edgeID string) ([]string, error) {
	var names []string
	for _, a := range c.MQTTAccounts() {
		if a.Role == RoleEdge && a.Group == group && a.EdgeID == edgeID {
			names = append(names, a.Username)
		}
	}
	known := c.Host.knows(group, edgeID)
	if len(names) == 0 && !known {
		return nil, fmt.Errorf("%w: no account and no node for edge %s/%s", ErrNoAccount, group, edgeID)
	}
	for _, a := range c.MQTTAccounts() {
		if !slices.Contains(names, a.Username) {
			continue
		}
		var err error
		if a.Source == "api" {
			err = c.DeleteMQTTUser(ctx, a.Username)
		} else {
			err = c.SetMQTTUserDisabled(ctx, a.Username, true)
		}
		if err != nil {
			return names, err
		}
	}
	if err := c.Host.Forget(ctx, group, edgeID); err != nil {
		return names, err
	}
	if c.opts.Cluster != nil {
		// The other nodes' hosts forget it too (its births are gone from
		// the backbone already).
		if err := c.Bus.Conn().Publish(subjectForget, []byte(group+"/"+edgeID)); err != nil {
			return names, fmt.Errorf("cloud: tell the other nodes to forget %s/%s: %w", group, edgeID, err)
		}
	}
	return names, nil
}

// endSessions ends every session of an account, connected or kept: a
// connected client is told it is no longer authorized.
func (b *Broker) endSessions(name string) {
	b.auth.forget(name)
	for id, cl := range b.srv.Clients.GetAll() {
		if cl.Net.Inline || string(cl.Properties.Username) != name {
			continue
		}
		if !cl.Closed() {
			_ = b.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		}
		b.srv.UnsubscribeClient(cl)
		b.srv.Clients.Delete(id)
		b.log.Info("session ended: account revoked", "username", name, "client", id)
	}
}
