package store

import (
	"context"
	"testing"
	"time"
)

func TestBarePublishRate(t *testing.T) {
	msgs, took, err := BarePublishRate(context.Background(), t.TempDir(), 200*time.Millisecond, 100, 256)
	if err != nil || msgs < 256 || msgs%256 != 0 || took < 200*time.Millisecond {
		t.Fatalf("%d messages in %s: %v", msgs, took, err)
	}
}
