package cloud

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/uns"
)

// bucketMQTTUsers keeps the MQTT accounts created through the API, with
// their password hashes, so that they survive a restart.
const bucketMQTTUsers = "CALX_MQTT_USERS"

// ErrBadAccount is returned, wrapped, for an account request that is not valid.
var ErrBadAccount = errors.New("invalid account")

func (c *Cloud) openAccounts(ctx context.Context) error {
	kv, err := c.Bus.JetStream().CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketMQTTUsers, Storage: jetstream.FileStorage, History: 5})
	if err != nil {
		return fmt.Errorf("cloud: accounts bucket: %w", err)
	}
	c.accounts = kv
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("cloud: accounts: %w", err)
	}
	var states []string
	for key := range lister.Keys() {
		if strings.HasPrefix(key, stateKeyPrefix) {
			states = append(states, key)
			continue
		}
		e, err := kv.Get(ctx, key)
		if err != nil {
			continue
		}
		var u MQTTUser
		if err := json.Unmarshal(e.Value(), &u); err != nil || u.Validate() != nil {
			c.log.Error("stored MQTT account unusable, skipped", "key", key)
			continue
		}
		if err := c.Broker.auth.add(u, true); err != nil {
			c.log.Warn("stored MQTT account shadowed by the config", "username", u.Username)
		}
	}
	// Disabled accounts and rotated passwords, of accounts from the
	// config file too.
	for _, key := range states {
		e, err := kv.Get(ctx, key)
		if err != nil {
			continue
		}
		var st accountState
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			c.log.Error("stored MQTT account state unusable, skipped", "key", key)
			continue
		}
		c.Broker.auth.apply(store.Untoken(strings.TrimPrefix(key, stateKeyPrefix)), st)
	}
	return nil
}

// AddMQTTUser creates an MQTT account and keeps it across restarts.
func (c *Cloud) AddMQTTUser(ctx context.Context, u MQTTUser) error {
	if err := u.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrBadAccount, err)
	}
	if err := c.Broker.auth.add(u, true); err != nil {
		return err
	}
	b, err := json.Marshal(u)
	if err == nil {
		_, err = c.accounts.Create(ctx, store.Token(u.Username), b)
	}
	if err != nil {
		return fmt.Errorf("cloud: store account %s: %w", u.Username, err)
	}
	return nil
}

// ProvisionEdge creates the identity of a new edge node: a username and a
// generated password (returned once, stored hashed) that may act only as
// that edge node.
func (c *Cloud) ProvisionEdge(ctx context.Context, group, edgeID string) (username, password string, err error) {
	if err := uns.ValidateSegment(group); err != nil {
		return "", "", fmt.Errorf("%w: group %q: %v", ErrBadAccount, group, err)
	}
	if err := uns.ValidateSegment(edgeID); err != nil {
		return "", "", fmt.Errorf("%w: edge_node %q: %v", ErrBadAccount, edgeID, err)
	}
	raw := make([]byte, 18)
	if _, err := rand.Read(raw); err != nil {
		return "", "", err
	}
	password = base64.RawURLEncoding.EncodeToString(raw)
	hash, err := HashPassword(password)
	if err != nil {
		return "", "", err
	}
	username = edgeID + "@" + group
	if err := c.AddMQTTUser(ctx, MQTTUser{Username: username, PasswordHash: hash, Role: RoleEdge, Group: group, EdgeID: edgeID}); err != nil {
		return "", "", err
	}
	return username, password, nil
}

// BrokerAddr is the address the cloud's MQTT broker listens on.
func (c *Cloud) BrokerAddr() string { return c.Broker.Addr() }
