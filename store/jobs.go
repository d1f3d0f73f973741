package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// One of each job in a cluster: a job that must run once (the transforms
// and alarms, the primary host's commands) runs on the node that holds its
// key in the replicated bucket CALX_JOBS. The key is taken with the
// bucket's create (which succeeds only while nobody holds it) and kept by
// updates that name the revision the holder last wrote, so two nodes never
// both succeed; JetStream's replication decides, through its Raft group,
// which write came first. The bucket's entries expire JobTTL after their
// last write: a node that dies stops renewing and another takes the key
// once it has expired. A holder that cannot renew for half of JobTTL (it
// lost the quorum) stops its job before its key can expire.
//
// Without a cluster every job runs on the one node.

const bucketJobs = "CALX_JOBS"

// JobTTL is how long a job's key outlives its holder's last renewal; a job
// moves within about that long after its node dies.
const JobTTL = 5 * time.Second

// Jobs runs jobs once in the cluster.
type Jobs struct {
	kv   jetstream.KeyValue // nil alone
	node string
	ttl  time.Duration
	log  *slog.Logger

	mu   sync.Mutex
	held map[string]bool
}

// Jobs opens the jobs' bucket (in a cluster) for this node.
func (b *Bus) Jobs(ctx context.Context) (*Jobs, error) {
	j := &Jobs{node: b.Node(), ttl: JobTTL, log: b.log.With("component", "jobs"), held: map[string]bool{}}
	if b.opts.Cluster == nil {
		return j, nil
	}
	kv, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketJobs, TTL: j.ttl, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("jobs bucket: %w", err)
	}
	j.kv = kv
	return j, nil
}

// Node is this node's name: the cluster's node name, or the server's.
func (b *Bus) Node() string {
	if b.opts.Cluster != nil {
		return b.opts.Cluster.Node
	}
	if b.srv != nil {
		return b.srv.Name()
	}
	return ""
}

// Run runs job whenever this node holds it, until ctx ends: run gets a
// context that ends when the node loses the job (or ctx ends), and must
// return soon after; the job is taken again only once run returned. Alone,
// run runs once, at once. Run returns when ctx ends and run has returned;
// a held job is then given up at once, so that another node takes it
// without waiting for its key to expire.
func (j *Jobs) Run(ctx context.Context, job string, run func(ctx context.Context)) {
	if j.kv == nil {
		j.set(job, true)
		run(ctx)
		j.set(job, false)
		return
	}
	for ctx.Err() == nil {
		rev, ok := j.take(ctx, job)
		if !ok {
			pause(ctx, j.ttl/5+rand.N(j.ttl/10))
			continue
		}
		j.log.Info("job taken", "job", job, "node", j.node)
		j.hold(ctx, job, rev, run)
	}
}

// take tries to take job: it is free, or this node held it before (a
// restart within its key's life).
func (j *Jobs) take(ctx context.Context, job string) (uint64, bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	rev, err := j.kv.Create(ctx, job, []byte(j.node))
	if err == nil {
		return rev, true
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return 0, false
	}
	e, err := j.kv.Get(ctx, job)
	if err != nil || string(e.Value()) != j.node {
		return 0, false
	}
	rev, err = j.kv.Update(ctx, job, []byte(j.node), e.Revision())
	return rev, err == nil
}

// hold runs the job while renewing its key, and returns when the key is
// lost or ctx ends, once run has returned.
func (j *Jobs) hold(ctx context.Context, job string, rev uint64, run func(ctx context.Context)) {
	jctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	j.set(job, true)
	go func() {
		defer close(done)
		run(jctx)
	}()
	defer func() {
		stop()
		<-done
		j.set(job, false)
		if ctx.Err() != nil && rev != 0 {
			// Given up cleanly: the next holder need not wait.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			if err := j.kv.Delete(dctx, job, jetstream.LastRevision(rev)); err != nil {
				j.log.Warn("job not given up; it moves when its key expires", "job", job, "err", err)
			}
		}
	}()
	renewed := time.Now()
	tick := time.NewTicker(j.ttl / 5)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(ctx, j.ttl/5)
		next, err := j.kv.Update(rctx, job, []byte(j.node), rev)
		cancel()
		switch {
		case err == nil:
			rev, renewed = next, time.Now()
		case errors.Is(err, jetstream.ErrKeyExists):
			// A renewal that timed out may have been stored all the same:
			// the key is still this node's, at a later revision.
			gctx, cancel := context.WithTimeout(ctx, j.ttl/5)
			e, gerr := j.kv.Get(gctx, job)
			cancel()
			if gerr == nil && string(e.Value()) == j.node {
				rev, renewed = e.Revision(), time.Now()
				continue
			}
			// Somebody else holds it: this node's key expired.
			j.log.Warn("job lost to another node", "job", job, "node", j.node)
			rev = 0
			return
		case time.Since(renewed) > j.ttl/2:
			j.log.Warn("job given up: its key could not be renewed", "job", job, "node", j.node, "err", err)
			rev = 0
			return
		}
	}
}

func (j *Jobs) set(job string, held bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if held {
		j.held[job] = true
	} else {
		delete(j.held, job)
	}
}

// Holds says whether this node runs job now.
func (j *Jobs) Holds(job string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.held[job]
}

// Holders maps each of jobs held in the cluster to its node. It reads
// each job's key, which any node with a copy of the bucket answers: the
// answer comes while the bucket's leader is being replaced too (a job whose
// key cannot be read now is left out).
func (j *Jobs) Holders(ctx context.Context, jobs ...string) (map[string]string, error) {
	out := map[string]string{}
	if j.kv == nil {
		j.mu.Lock()
		defer j.mu.Unlock()
		for job := range j.held {
			out[job] = j.node
		}
		return out, nil
	}
	var errs []error
	for _, job := range jobs {
		e, err := j.kv.Get(ctx, job)
		switch {
		case err == nil:
			out[job] = string(e.Value())
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			errs = append(errs, fmt.Errorf("job %s: %w", job, err))
		}
	}
	if len(errs) == len(jobs) && len(jobs) > 0 {
		return nil, fmt.Errorf("jobs: %w", errors.Join(errs...))
	}
	return out, nil
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
