package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/uns"
)

// The edge's store-and-forward stream.
const (
	streamBuffer  = "CALX_EDGE_BUFFER"
	subjectBuffer = "calx.edge.buffer"
	// headerValues carries the number of values in a buffered message, so
	// that what a bound drops can be counted in values.
	headerValues = "Calx-Values"
)

// buffer is the edge's durable store-and-forward queue: every value that
// passes report-by-exception is written here before any network send, and
// stays until the cloud's receipt says it is stored there.
type buffer struct {
	bus      *store.Bus
	js       jetstream.JetStream
	stream   jetstream.Stream
	log      *slog.Logger
	maxBytes int64
	maxAge   time.Duration

	mu      sync.Mutex // serialises appends with trims
	buf     []byte
	dropped atomic.Uint64
	stored  atomic.Uint64
}

func openBuffer(ctx context.Context, dir string, maxBytes int64, maxAge, sync time.Duration, log *slog.Logger) (*buffer, error) {
	sc := jetstream.StreamConfig{Name: streamBuffer, Subjects: []string{subjectBuffer}}
	// The stream's own limits are a safety net above ours: ours count what
	// they drop, JetStream's would not.
	bus, err := store.NewBus(store.Options{Dir: filepath.Join(dir, "buffer"), SyncInterval: sync,
		MaxBytes: maxBytes + maxBytes/10 + 64<<20, MaxAge: maxAge + 24*time.Hour,
		Streams: []jetstream.StreamConfig{sc}, Logger: log})
	if err != nil {
		return nil, err
	}
	if err := bus.Start(ctx); err != nil {
		return nil, fmt.Errorf("edge buffer: %w", err)
	}
	st, err := bus.JetStream().Stream(ctx, streamBuffer)
	if err != nil {
		bus.Shutdown()
		return nil, fmt.Errorf("edge buffer: %w", err)
	}
	return &buffer{bus: bus, js: bus.JetStream(), stream: st, log: log.With("component", "edge-buffer"), maxBytes: maxBytes, maxAge: maxAge}, nil
}

// append stores samples as one message; when it returns nil they survive a
// crash of the process.
func (b *buffer) append(ctx context.Context, samples []uns.Sample) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = uns.AppendBatch(b.buf[:0], samples)
	msg := nats.NewMsg(subjectBuffer)
	msg.Data = b.buf
	msg.Header.Set(headerValues, strconv.Itoa(len(samples)))
	if _, err := b.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("edge buffer: %w", err)
	}
	b.stored.Add(uint64(len(samples)))
	return nil
}

// state returns the number of messages and bytes buffered and the first
// and last sequence.
func (b *buffer) state(ctx context.Context) (jetstream.StreamState, error) {
	info, err := b.stream.Info(ctx)
	if err != nil {
		return jetstream.StreamState{}, err
	}
	return info.State, nil
}

// confirm removes every message up to seq: the cloud has stored them.
func (b *buffer) confirm(ctx context.Context, seq uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.stream.Purge(ctx, jetstream.WithPurgeSequence(seq+1)); err != nil {
		return fmt.Errorf("edge buffer: trim: %w", err)
	}
	return nil
}

// enforceBounds drops the oldest messages while the buffer is over its size
// or holds values older than its age bound, and counts the values dropped.
func (b *buffer) enforceBounds(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		info, err := b.stream.Info(ctx)
		if err != nil {
			return err
		}
		st := info.State
		if st.Msgs == 0 {
			return nil
		}
		over := int64(st.Bytes) > b.maxBytes
		old := b.maxAge > 0 && time.Since(st.FirstTime) > b.maxAge
		if !over && !old {
			return nil
		}
		// Drop a slice of the oldest messages at a time.
		n := max(st.Msgs/100, 1)
		var values uint64
		for seq := st.FirstSeq; seq < st.FirstSeq+n; seq++ {
			m, err := b.stream.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			values += valuesOf(m.Header.Get(headerValues))
		}
		if err := b.stream.Purge(ctx, jetstream.WithPurgeSequence(st.FirstSeq+n)); err != nil {
			return err
		}
		b.dropped.Add(values)
		reason := "size"
		if old {
			reason = "age"
		}
		b.log.Warn("buffer bound hit: oldest values dropped", "reason", reason, "values", values,
			"dropped_total", b.dropped.Load(), "bytes", st.Bytes, "max_bytes", b.maxBytes)
	}
}

func (b *buffer) close() { b.bus.Shutdown() }

func valuesOf(h string) uint64 {
	n, err := strconv.ParseUint(h, 10, 64)
	if err != nil {
		return 1 // a message holds at least one value
	}
	return n
}
