package store

import (
	"context"
	"errors"
	"iter"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// loopBus starts a backbone with n messages 1..n in the UNS stream and a
// durable consumer of them.
func loopBus(t *testing.T, n int) (*Bus, jetstream.ConsumerConfig) {
	t.Helper()
	ctx := context.Background()
	b, err := NewBus(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Shutdown)
	for i := 1; i <= n; i++ {
		if _, err := b.JetStream().Publish(ctx, SubjectUNS+".g.e", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	return b, jetstream.ConsumerConfig{Durable: "loop", AckPolicy: jetstream.AckAllPolicy, AckWait: time.Minute,
		MaxAckPending: -1, DeliverPolicy: jetstream.DeliverAllPolicy}
}

func numbers(msgs iter.Seq[jetstream.Msg]) []int {
	var out []int
	for m := range msgs {
		n, _ := strconv.Atoi(string(m.Data()))
		out = append(out, n)
	}
	return out
}

func ackFloor(t *testing.T, c jetstream.Consumer) uint64 {
	t.Helper()
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.AckFloor.Stream
}

// TestLoopAcksOnlyFinishedWork: a batch is acknowledged once its work is
// finished, in order; when Finish fails, neither that batch nor any
// taken after it is acknowledged, and a resumed consumer delivers them
// again, so every message is finished at least once.
func TestLoopAcksOnlyFinishedWork(t *testing.T) {
	b, cfg := loopBus(t, 50)
	ctx := context.Background()
	cons, err := ResumeConsumer(ctx, b.JetStream(), StreamUNS, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var finished []int
	broken := errors.New("historian down")
	l := Loop[[]int]{Batch: 7, MaxWait: 100 * time.Millisecond, Log: slog.Default(), Depth: 2,
		Take: func(_ context.Context, msgs iter.Seq[jetstream.Msg]) ([]int, error) { return numbers(msgs), nil },
		Finish: func(_ context.Context, work []int) error {
			if slices.Contains(work, 30) {
				return broken
			}
			finished = append(finished, work...)
			return nil
		},
	}
	if err := l.Run(ctx, cons); !errors.Is(err, broken) {
		t.Fatalf("Run: %v, want the Finish failure", err)
	}
	// Batches of 7: 1-28 finished, 29-35 failed.
	if want := seq(1, 28); !slices.Equal(finished, want) {
		t.Fatalf("finished %v, want %v", finished, want)
	}
	if f := ackFloor(t, cons); f != 28 {
		t.Fatalf("ack floor %d, want 28", f)
	}

	// Resumed, the consumer delivers from 29 on.
	cons, err = ResumeConsumer(ctx, b.JetStream(), StreamUNS, cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	l.Finish = func(_ context.Context, work []int) error {
		finished = append(finished, work...)
		if slices.Contains(work, 50) {
			cancel()
		}
		return nil
	}
	if err := l.Run(runCtx, cons); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if want := seq(1, 50); !slices.Equal(finished, want) {
		t.Fatalf("finished %v, want %v", finished, want)
	}
	if f := ackFloor(t, cons); f != 50 {
		t.Fatalf("ack floor %d, want 50", f)
	}
}

// TestLoopTakeFailure: without Finish, a batch is acknowledged once taken;
// a failed Take stops the loop with its batch unacknowledged.
func TestLoopTakeFailure(t *testing.T) {
	b, cfg := loopBus(t, 20)
	ctx := context.Background()
	cons, err := ResumeConsumer(ctx, b.JetStream(), StreamUNS, cfg)
	if err != nil {
		t.Fatal(err)
	}
	broken := errors.New("engine torn")
	var taken []int
	l := Loop[struct{}]{Batch: 5, MaxWait: 100 * time.Millisecond, Log: slog.Default(),
		Take: func(_ context.Context, msgs iter.Seq[jetstream.Msg]) (struct{}, error) {
			ns := numbers(msgs)
			if slices.Contains(ns, 12) {
				return struct{}{}, broken
			}
			taken = append(taken, ns...)
			return struct{}{}, nil
		},
	}
	if err := l.Run(ctx, cons); !errors.Is(err, broken) {
		t.Fatalf("Run: %v", err)
	}
	if !slices.Equal(taken, seq(1, 10)) {
		t.Fatalf("taken %v", taken)
	}
	if f := ackFloor(t, cons); f != 10 {
		t.Fatalf("ack floor %d, want 10", f)
	}
}

// TestLoopFinishesWhileTaking: the next batch is taken while the one
// before is being finished.
func TestLoopFinishesWhileTaking(t *testing.T) {
	b, cfg := loopBus(t, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cons, err := ResumeConsumer(ctx, b.JetStream(), StreamUNS, cfg)
	if err != nil {
		t.Fatal(err)
	}
	secondTaken := make(chan struct{})
	overlapped := false
	l := Loop[[]int]{Batch: 5, MaxWait: 100 * time.Millisecond, Log: slog.Default(), Depth: 1,
		Take: func(_ context.Context, msgs iter.Seq[jetstream.Msg]) ([]int, error) {
			ns := numbers(msgs)
			if ns[0] == 6 {
				close(secondTaken)
			}
			return ns, nil
		},
		Finish: func(_ context.Context, work []int) error {
			if work[0] == 1 {
				select {
				case <-secondTaken:
					overlapped = true
				case <-time.After(5 * time.Second):
				}
			}
			if work[0] == 6 {
				cancel()
			}
			return nil
		},
	}
	if err := l.Run(ctx, cons); err != nil {
		t.Fatal(err)
	}
	if !overlapped {
		t.Fatal("the second batch was not taken while the first was finished")
	}
}

func seq(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// TestLoopBatchSizes: a consumer that is behind takes full batches back to
// back, and one that keeps up takes what is there at once, without waiting
// for a batch to fill or for MaxWait.
func TestLoopBatchSizes(t *testing.T) {
	b, cfg := loopBus(t, 250)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cons, err := ResumeConsumer(ctx, b.JetStream(), StreamUNS, cfg)
	if err != nil {
		t.Fatal(err)
	}
	type taken struct {
		n  int
		at time.Time
	}
	got := make(chan taken, 16)
	l := Loop[struct{}]{Batch: 100, MaxWait: 10 * time.Second, Log: slog.Default(),
		Take: func(_ context.Context, msgs iter.Seq[jetstream.Msg]) (struct{}, error) {
			got <- taken{len(numbers(msgs)), time.Now()}
			return struct{}{}, nil
		},
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, cons) }()
	for i, want := range []int{100, 100, 50} {
		select {
		case tk := <-got:
			if tk.n != want {
				t.Fatalf("batch %d of the backlog: %d messages, want %d", i+1, tk.n, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("batch %d of the backlog not taken in 5 s (MaxWait is 10 s)", i+1)
		}
	}
	// Caught up: three new messages are taken together, long before the
	// fetch's 10 s wait would end.
	published := time.Now()
	for i := 251; i <= 253; i++ {
		if _, err := b.JetStream().Publish(ctx, SubjectUNS+".g.e", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for n < 3 {
		select {
		case tk := <-got:
			n += tk.n
			if wait := tk.at.Sub(published); wait > 5*time.Second {
				t.Fatalf("new messages taken after %s", wait)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of 3 new messages taken in 5 s (MaxWait is 10 s)", n)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestLoopLostDelivery: a message delivered but lost on the way (as when
// the node leading the consumer is cut off with a batch in flight; here
// another client takes it) is not covered by the AckAll of what comes
// after: the loop sees the consumer's delivery sequence skip, makes the
// consumer again from its acknowledgement floor, and takes it.
func TestLoopLostDelivery(t *testing.T) {
	b, cfg := loopBus(t, 20)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cons, err := ResumeConsumer(ctx, b.JetStream(), StreamUNS, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stolen := 0
	seen := map[int]bool{}
	resets := 0
	l := Loop[struct{}]{Batch: 5, MaxWait: 100 * time.Millisecond, Log: slog.Default(),
		Reset: func(ctx context.Context) (jetstream.Consumer, error) {
			resets++
			return ResumeConsumer(ctx, b.JetStream(), StreamUNS, cfg)
		},
		Take: func(_ context.Context, msgs iter.Seq[jetstream.Msg]) (struct{}, error) {
			for _, n := range numbers(msgs) {
				seen[n] = true
			}
			if stolen == 0 {
				// The next delivery goes elsewhere and is never acknowledged.
				batch, err := cons.FetchNoWait(1)
				if err != nil {
					t.Error(err)
				}
				for m := range batch.Messages() {
					stolen, _ = strconv.Atoi(string(m.Data()))
				}
			}
			if len(seen) == 20 {
				cancel()
			}
			return struct{}{}, nil
		},
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, cons) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		cancel()
		<-done
		missing := []int{}
		for i := 1; i <= 20; i++ {
			if !seen[i] {
				missing = append(missing, i)
			}
		}
		t.Fatalf("message %d was taken by another client; the loop never took %v (resets %d)", stolen, missing, resets)
	}
	if stolen == 0 || resets == 0 {
		t.Fatalf("stolen %d, resets %d: the test did not lose a delivery", stolen, resets)
	}
}
