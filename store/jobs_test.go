package store

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestJobsAloneRunAtOnce(t *testing.T) {
	b, err := NewBus(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Shutdown)
	j, err := b.Jobs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		j.Run(ctx, "transforms", func(ctx context.Context) { close(ran); <-ctx.Done() })
	}()
	select {
	case <-ran:
	case <-time.After(time.Second):
		t.Fatal("a node alone did not run its job at once")
	}
	if h, _ := j.Holders(ctx, "transforms"); h["transforms"] != b.Node() || !j.Holds("transforms") {
		t.Fatalf("holders %v", h)
	}
	cancel()
	<-done
	if j.Holds("transforms") {
		t.Fatal("job still held after its run ended")
	}
}

// jobWatch records which nodes run a job, and whether two ever ran it at
// once.
type jobWatch struct {
	running atomic.Int32
	overlap atomic.Bool
	mu      sync.Mutex
	holder  string
}

func (w *jobWatch) run(node string) func(context.Context) {
	return func(ctx context.Context) {
		if w.running.Add(1) > 1 {
			w.overlap.Store(true)
		}
		w.mu.Lock()
		w.holder = node
		w.mu.Unlock()
		<-ctx.Done()
		w.mu.Lock()
		w.holder = ""
		w.mu.Unlock()
		w.running.Add(-1)
	}
}

func (w *jobWatch) waitHolder(t *testing.T, not string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		h := w.holder
		w.mu.Unlock()
		if h != "" && h != not {
			return h
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no node other than %q took the job within %v", not, within)
	return ""
}

// A job runs on one node of three at a time; given up cleanly it moves at
// once; when its node dies it moves once its key expired, and the dead
// node's run stopped before that (it could not renew).
func TestJobsRunOnceAndMove(t *testing.T) {
	buses := startCluster(t, 3, nil)
	var w jobWatch
	cancels := map[string]context.CancelFunc{}
	done := map[string]chan struct{}{}
	jobs := map[string]*Jobs{}
	var wg sync.WaitGroup
	for _, b := range buses {
		j, err := b.Jobs(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancels[b.Node()], done[b.Node()], jobs[b.Node()] = cancel, make(chan struct{}), j
		wg.Go(func() {
			defer close(done[b.Node()])
			j.Run(ctx, "transforms", w.run(b.Node()))
		})
	}
	t.Cleanup(func() {
		for _, c := range cancels {
			c()
		}
		wg.Wait()
	})
	first := w.waitHolder(t, "", 15*time.Second)
	time.Sleep(JobTTL + time.Second) // renewals go on; nobody else takes it
	if h := w.waitHolder(t, "", time.Second); h != first || w.overlap.Load() {
		t.Fatalf("holder moved from %s to %s without a cause (overlap %v)", first, h, w.overlap.Load())
	}

	began := time.Now()
	cancels[first]()
	<-done[first]
	// Given up, not left to expire: within a second its key is gone (or
	// another's already), where an expiry takes JobTTL.
	for node, j := range jobs {
		if node == first {
			continue
		}
		deadline := time.Now().Add(time.Second)
		for {
			h, err := j.Holders(context.Background(), "transforms")
			if err == nil && h["transforms"] != first {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s gave the job up, %s sees it held by %q (%v)", first, node, h["transforms"], err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		break
	}
	second := w.waitHolder(t, first, 2*JobTTL)
	t.Logf("given up by %s, taken by %s after %v", first, second, time.Since(began).Round(time.Millisecond))

	var dead *Bus
	for _, b := range buses {
		if b.Node() == second {
			dead = b
		}
	}
	began = time.Now()
	dead.Shutdown() // its Run goes on, unable to reach anyone
	third := w.waitHolder(t, second, 2*JobTTL)
	if third == first {
		t.Fatalf("taken by %s, whose run was stopped", first)
	}
	t.Logf("node %s died; job on %s after %v", second, third, time.Since(began).Round(time.Millisecond))
	if w.overlap.Load() {
		t.Fatal("two nodes ran the job at once")
	}
}
