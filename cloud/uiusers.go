package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/calx-iiot/calx/store"
)

// The UI and API's own identities the cloud keeps in the backbone, so
// that they survive a restart: the users made through the API (with
// bcrypt hashes) and the API tokens (with the SHA-256 of their secret).
// Users of the config file are not kept here.
const (
	bucketUIUsers   = "CALX_UI_USERS"
	bucketAPITokens = "CALX_API_TOKENS"
	bucketTokenUse  = "CALX_API_TOKEN_USE"
)

// UIUser is a UI and API user as the cloud keeps it.
type UIUser struct {
	Username     string   `json:"username"`
	PasswordHash string   `json:"password_hash"`
	Role         string   `json:"role"`
	Scope        []string `json:"scope,omitempty"`
}

// APIToken is a machine's token (Grafana, a script, an assistant) as the
// cloud keeps it: never the secret, only its SHA-256.
type APIToken struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	Scope     []string  `json:"scope,omitempty"`
	SHA256    string    `json:"sha256"` // hex, of the whole token
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires"`
	CreatedBy string    `json:"created_by"`
}

// kept is a bucket of JSON records by key.
type kept[T any] struct {
	kv  jetstream.KeyValue
	key func(T) string
	log *slog.Logger
}

func (k kept[T]) list(ctx context.Context) ([]T, error) {
	lister, err := k.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []T
	for key := range lister.Keys() {
		e, err := k.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", k.kv.Bucket(), key, err)
		}
		var v T
		if err := json.Unmarshal(e.Value(), &v); err != nil {
			k.log.Error("stored record unusable, skipped", "bucket", k.kv.Bucket(), "key", key, "err", err)
			continue
		}
		out = append(out, v)
	}
	if err := ctx.Err(); err != nil {
		// The listing was cut short: the list is not whole.
		return nil, fmt.Errorf("%s: %w", k.kv.Bucket(), err)
	}
	return out, nil
}

func (k kept[T]) put(ctx context.Context, v T) error {
	b, err := json.Marshal(v)
	if err == nil {
		_, err = k.kv.Put(ctx, store.Token(k.key(v)), b)
	}
	return err
}

func (k kept[T]) delete(ctx context.Context, key string) error {
	if err := k.kv.Delete(ctx, store.Token(key)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	return nil
}

func (c *Cloud) openIdentities(ctx context.Context) error {
	users, err := c.Bus.JetStream().CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketUIUsers, Storage: jetstream.FileStorage, History: 5})
	if err != nil {
		return fmt.Errorf("cloud: users bucket: %w", err)
	}
	tokens, err := c.Bus.JetStream().CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketAPITokens, Storage: jetstream.FileStorage, History: 5})
	if err != nil {
		return fmt.Errorf("cloud: tokens bucket: %w", err)
	}
	c.uiUsers = kept[UIUser]{kv: users, key: func(u UIUser) string { return u.Username }, log: c.log}
	c.apiTokens = kept[APIToken]{kv: tokens, key: func(t APIToken) string { return t.ID }, log: c.log}
	uses, err := c.Bus.JetStream().CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketTokenUse, Storage: jetstream.FileStorage, History: 1})
	if err != nil {
		return fmt.Errorf("cloud: token use bucket: %w", err)
	}
	c.tokenUse = kept[TokenUse]{kv: uses, key: func(u TokenUse) string { return u.ID }, log: c.log}
	return c.openDashboards(ctx)
}

// TokenUse is when an API token was last used, kept apart from the token
// so that writing it never brings back a token revoked meanwhile.
type TokenUse struct {
	ID   string    `json:"id"`
	Last time.Time `json:"last"`
}

// TokenUses lists the kept last uses of API tokens.
func (c *Cloud) TokenUses(ctx context.Context) ([]TokenUse, error) {
	us, err := c.tokenUse.list(ctx)
	if err != nil {
		return us, fmt.Errorf("token uses: %w", err)
	}
	return us, nil
}

// PutTokenUse keeps the last use of a token.
func (c *Cloud) PutTokenUse(ctx context.Context, u TokenUse) error {
	if err := c.tokenUse.put(ctx, u); err != nil {
		return fmt.Errorf("token %s use: %w", u.ID, err)
	}
	return nil
}

// UIUsers lists the users kept by the cloud.
func (c *Cloud) UIUsers(ctx context.Context) ([]UIUser, error) {
	us, err := c.uiUsers.list(ctx)
	if err != nil {
		return us, fmt.Errorf("users: %w", err)
	}
	return us, nil
}

// PutUIUser keeps u, replacing a user of the same name.
func (c *Cloud) PutUIUser(ctx context.Context, u UIUser) error {
	if err := c.uiUsers.put(ctx, u); err != nil {
		return fmt.Errorf("user %s: %w", u.Username, err)
	}
	return nil
}

// DeleteUIUser forgets a user kept by the cloud.
func (c *Cloud) DeleteUIUser(ctx context.Context, name string) error {
	if err := c.uiUsers.delete(ctx, name); err != nil {
		return fmt.Errorf("user %s: %w", name, err)
	}
	return nil
}

// APITokens lists the tokens kept by the cloud.
func (c *Cloud) APITokens(ctx context.Context) ([]APIToken, error) {
	ts, err := c.apiTokens.list(ctx)
	if err != nil {
		return ts, fmt.Errorf("tokens: %w", err)
	}
	return ts, nil
}

// PutAPIToken keeps t.
func (c *Cloud) PutAPIToken(ctx context.Context, t APIToken) error {
	if err := c.apiTokens.put(ctx, t); err != nil {
		return fmt.Errorf("token %s: %w", t.ID, err)
	}
	return nil
}

// DeleteAPIToken forgets a token.
func (c *Cloud) DeleteAPIToken(ctx context.Context, id string) error {
	if err := c.apiTokens.delete(ctx, id); err != nil {
		return fmt.Errorf("token %s: %w", id, err)
	}
	if err := c.tokenUse.delete(ctx, id); err != nil {
		return fmt.Errorf("token %s use: %w", id, err)
	}
	return nil
}
