// Package edgetest helps test connectors: a Sink that records what a
// connector hands over, a poller that waits for a condition, and a check
// that a connector's sample config parses.
package edgetest

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/calx-iiot/calx/config"
	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/internal/stuck"
)

// Sink records the latest reading of each tag, the number of reads and
// the losses reported.
type Sink struct {
	mu       sync.Mutex
	last     map[string]edge.Reading
	reads    int
	lost     []error
	declared []edge.TagDef
	// Dir is the device's directory (edge.DirSink).
	Dir string
}

// DeviceDir implements edge.DirSink.
func (s *Sink) DeviceDir() string { return s.Dir }

var _ edge.Sink = (*Sink)(nil)

// Emit records a read.
func (s *Sink) Emit(rs []edge.Reading) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil {
		s.last = map[string]edge.Reading{}
	}
	for _, r := range rs {
		s.last[r.Tag] = r
	}
	s.reads++
}

// Declare records tags a connector added while running.
func (s *Sink) Declare(defs []edge.TagDef) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.declared = append(s.declared, defs...)
	return nil
}

// Declared returns the tags declared so far.
func (s *Sink) Declared() []edge.TagDef {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]edge.TagDef(nil), s.declared...)
}

// Lost records a loss.
func (s *Sink) Lost(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lost = append(s.lost, err)
}

// Get returns the latest reading of a tag and whether there is one.
func (s *Sink) Get(tag string) (edge.Reading, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.last[tag]
	return r, ok
}

// Reads is how many reads were emitted.
func (s *Sink) Reads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads
}

// Losses is how many times the device was reported lost.
func (s *Sink) Losses() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.lost)
}

// LostErrors returns the errors the losses were reported with.
func (s *Sink) LostErrors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.lost...)
}

// Run runs a connector into a new Sink until the test ends.
func Run(t *testing.T, c edge.Connector) *Sink {
	t.Helper()
	s := &Sink{Dir: t.TempDir()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx, s); err != nil {
			t.Errorf("connector stopped: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); stuck.Within(t, time.Minute, "the connector's stop", func() { <-done }) })
	return s
}

// CheckFor polls f every sleep until it returns nil, and fails the test
// with f's last error when total has passed.
func CheckFor(t testing.TB, total, sleep time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(sleep)
	}
	t.Fatalf("condition not met in %s: %v", total, err)
}

// SampleConfig decodes a connector's sample config file strictly into v
// and calls build with it, failing the test on any error.
func SampleConfig[S any](t *testing.T, file string, build func(S) error) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var s S
	if err := config.Decode(file, b, &s); err != nil {
		t.Fatal(err)
	}
	if err := build(s); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// Start creates and starts an edge with opts, shut down when the test ends.
func Start(t testing.TB, opts edge.Options) *edge.Edge {
	t.Helper()
	e, err := edge.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stuck.Within(t, time.Minute, "the edge's shutdown", func() { e.Shutdown(context.Background()) })
	})
	return e
}
