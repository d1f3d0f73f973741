package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/calx-iiot/calx/store"
)

// bucketUIUsers keeps the UI and API users made through the API, with
// their password hashes, so that they survive a restart. Users of the
// config file are not kept here.
const bucketUIUsers = "CALX_UI_USERS"

// UIUser is a UI and API user as the cloud keeps it.
type UIUser struct {
	Username     string   `json:"username"`
	PasswordHash string   `json:"password_hash"`
	Role         string   `json:"role"`
	Scope        []string `json:"scope,omitempty"`
}

func (c *Cloud) openUIUsers(ctx context.Context) error {
	kv, err := c.Bus.JetStream().CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketUIUsers, Storage: jetstream.FileStorage, History: 5})
	if err != nil {
		return fmt.Errorf("cloud: users bucket: %w", err)
	}
	c.uiUsers = kv
	return nil
}

// UIUsers lists the users kept by the cloud.
func (c *Cloud) UIUsers(ctx context.Context) ([]UIUser, error) {
	lister, err := c.uiUsers.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	var out []UIUser
	for key := range lister.Keys() {
		e, err := c.uiUsers.Get(ctx, key)
		if err != nil {
			continue
		}
		var u UIUser
		if err := json.Unmarshal(e.Value(), &u); err != nil || u.Username == "" {
			c.log.Error("stored user unusable, skipped", "key", key)
			continue
		}
		out = append(out, u)
	}
	return out, nil
}

// PutUIUser keeps u, replacing a user of the same name.
func (c *Cloud) PutUIUser(ctx context.Context, u UIUser) error {
	b, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("user %s: %w", u.Username, err)
	}
	if _, err := c.uiUsers.Put(ctx, store.Token(u.Username), b); err != nil {
		return fmt.Errorf("user %s: %w", u.Username, err)
	}
	return nil
}

// DeleteUIUser forgets a user kept by the cloud.
func (c *Cloud) DeleteUIUser(ctx context.Context, name string) error {
	if err := c.uiUsers.Delete(ctx, store.Token(name)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("user %s: %w", name, err)
	}
	return nil
}
