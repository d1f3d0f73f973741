package cloud

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The MCP server's write confirmations (web/mcpwrite.go) are signed with a
// key kept in the backbone: the same on every node of a cluster and after
// a restart, so that a user's answer is taken by whichever node it
// reaches. Each answer is redeemed once in the whole cluster: its id is
// created in a bucket whose entries expire after answerTTL.

const (
	bucketMCP        = "CALX_MCP"
	bucketMCPAnswers = "CALX_MCP_ANSWERS"
	keyConfirm       = "confirm-key"
	answerTTL        = 15 * time.Minute // longer than a question lives
)

func (c *Cloud) openMCP(ctx context.Context) error {
	var err error
	if c.mcpKV, err = c.Bus.JetStream().CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketMCP, History: 1, Storage: jetstream.FileStorage}); err != nil {
		return fmt.Errorf("cloud: MCP bucket: %w", err)
	}
	if c.mcpAnswers, err = c.Bus.JetStream().CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketMCPAnswers, TTL: answerTTL, History: 1, Storage: jetstream.FileStorage}); err != nil {
		return fmt.Errorf("cloud: MCP answers bucket: %w", err)
	}
	return nil
}

// MCPConfirmKey is the key that signs the MCP server's confirmations,
// made at its first use.
func (c *Cloud) MCPConfirmKey(ctx context.Context) ([]byte, error) {
	for range 3 {
		e, err := c.mcpKV.Get(ctx, keyConfirm)
		if err == nil && len(e.Value()) == 32 {
			return e.Value(), nil
		}
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("cloud: MCP key: %w", err)
		}
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if _, err := c.mcpKV.Create(ctx, keyConfirm, key); err == nil {
			return key, nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("cloud: MCP key: %w", err)
		}
		// Another node made it a moment ago: read it.
	}
	return nil, errors.New("cloud: MCP key: neither made nor read")
}

// RedeemOnce says whether the answer id is redeemed for the first time in
// the cluster (within answerTTL).
func (c *Cloud) RedeemOnce(ctx context.Context, id string) (bool, error) {
	_, err := c.mcpAnswers.Create(ctx, id, []byte{1})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyExists):
		return false, nil
	}
	return false, fmt.Errorf("cloud: MCP answer: %w", err)
}
