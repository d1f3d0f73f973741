package cloud

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/calx-iiot/calx/store"
)

// In a cluster, the MQTT accounts made, changed or deleted through one
// node's API hold on every node's broker: each node watches the accounts'
// bucket and applies what another node changed, ending the sessions of an
// account disabled, deleted or given a new password, as the node asked did.

// accountWatch applies the accounts' changes until stopped.
type accountWatch struct {
	w    jetstream.KeyWatcher
	done chan struct{}
}

func (c *Cloud) watchAccounts(ctx context.Context) (*accountWatch, error) {
	// From the accounts as they are (applied again, to the same effect):
	// a change made between their load and this watch is not missed.
	w, err := c.accounts.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("cloud: watch accounts: %w", err)
	}
	aw := &accountWatch{w: w, done: make(chan struct{})}
	go func() {
		defer close(aw.done)
		for e := range w.Updates() {
			if e != nil {
				c.accountChanged(e)
			}
		}
	}()
	return aw, nil
}

func (aw *accountWatch) stop() {
	if aw != nil {
		_ = aw.w.Stop()
		<-aw.done
	}
}

// accountChanged applies one change of the accounts' bucket to this node's
// broker. Changes this node made itself are applied again, to the same
// effect.
func (c *Cloud) accountChanged(e jetstream.KeyValueEntry) {
	h := c.Broker.auth
	if key, ok := strings.CutPrefix(e.Key(), stateKeyPrefix); ok {
		if e.Operation() != jetstream.KeyValuePut {
			return // its account is deleted as well
		}
		var st accountState
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			c.log.Error("stored MQTT account state unusable, skipped", "key", e.Key())
			return
		}
		name := store.Untoken(key)
		h.umu.RLock()
		u := h.users[name]
		h.umu.RUnlock()
		h.apply(name, st)
		if st.Disabled || st.PasswordHash != "" && st.PasswordHash != u.PasswordHash {
			c.Broker.endSessions(name)
		}
		return
	}
	name := store.Untoken(e.Key())
	if e.Operation() != jetstream.KeyValuePut {
		h.umu.Lock()
		_, had := h.users[name]
		fromAPI := h.fromAPI[name]
		if had && fromAPI {
			delete(h.users, name)
			delete(h.fromAPI, name)
			delete(h.disabled, name)
		}
		h.umu.Unlock()
		if had && fromAPI {
			c.Broker.endSessions(name)
		}
		return
	}
	var u MQTTUser
	if err := json.Unmarshal(e.Value(), &u); err != nil || u.Validate() != nil {
		c.log.Error("stored MQTT account unusable, skipped", "key", e.Key())
		return
	}
	h.umu.Lock()
	old, had := h.users[name]
	fromAPI := !had || h.fromAPI[name]
	if fromAPI {
		h.users[name], h.fromAPI[name] = u, true
	}
	h.umu.Unlock()
	if !fromAPI {
		c.log.Warn("MQTT account made on another node shadowed by this node's config", "username", name)
		return
	}
	if had && old.PasswordHash != u.PasswordHash {
		c.Broker.endSessions(name)
	}
}
