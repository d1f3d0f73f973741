package store

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestResumeConsumerRedeliversWhatWasNotAcked: a batch is fetched but not
// acknowledged when the backbone stops; after a restart the consumer
// delivers it again first, so an AckAll of later messages cannot cover it.
func TestResumeConsumerRedeliversWhatWasNotAcked(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	cfg := jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckAllPolicy, AckWait: time.Minute, DeliverPolicy: jetstream.DeliverAllPolicy}
	fetch := func(c jetstream.Consumer, n int) []jetstream.Msg {
		t.Helper()
		b, err := c.Fetch(n, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		var out []jetstream.Msg
		for m := range b.Messages() {
			out = append(out, m)
		}
		return out
	}
	publish := func(js jetstream.JetStream, from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			if _, err := js.Publish(ctx, SubjectUNS+".g.e", []byte(strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
	}

	b, _ := NewBus(Options{Dir: dir})
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	publish(b.JetStream(), 1, 10)
	c, err := ResumeConsumer(ctx, b.JetStream(), StreamUNS, cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := fetch(c, 4)
	if len(got) != 4 {
		t.Fatalf("fetched %d", len(got))
	}
	if err := got[1].Ack(); err != nil { // 1 and 2 done
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	_ = fetch(c, 3) // 5..7 delivered, never acked
	b.Shutdown()

	b2, _ := NewBus(Options{Dir: dir})
	if err := b2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b2.Shutdown)
	publish(b2.JetStream(), 11, 12)
	c2, err := ResumeConsumer(ctx, b2.JetStream(), StreamUNS, cfg)
	if err != nil {
		t.Fatal(err)
	}
	got = fetch(c2, 100)
	var vals []string
	for _, m := range got {
		vals = append(vals, string(m.Data()))
	}
	if len(vals) != 10 || vals[0] != "3" || vals[9] != "12" {
		t.Fatalf("after restart got %v, want 3..12", vals)
	}
	if err := got[len(got)-1].Ack(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)

	// All acknowledged: opening it again keeps its place.
	c3, err := ResumeConsumer(ctx, b2.JetStream(), StreamUNS, cfg)
	if err != nil {
		t.Fatal(err)
	}
	publish(b2.JetStream(), 13, 13)
	got = fetch(c3, 100)
	if len(got) != 1 || string(got[0].Data()) != "13" {
		t.Fatalf("reopened consumer delivered %d messages", len(got))
	}
}
