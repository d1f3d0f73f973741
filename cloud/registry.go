package cloud

import (
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// TagState is a tag of the namespace with its current value.
type TagState struct {
	uns.Tag
	Value   uns.Value
	TS      time.Time
	Quality uns.Quality
	HasVal  bool
	// Reason says why a calculated tag is bad.
	Reason string

	// For the UNS JSON republisher, guarded by the registry's lock: the
	// current value changed since it was last taken (due), and when it
	// was last taken.
	due   bool
	taken time.Time
}

// Registry is the live namespace: every tag the host has seen in a birth,
// with its Sparkplug address and current value. Safe for concurrent use.
type Registry struct {
	mu   sync.RWMutex
	tags map[uns.Path]*TagState
	// Changed current values for the UNS JSON republisher, once it
	// watches (watch.go).
	watch     bool
	every     time.Duration         // a tag is taken at most once per every
	tick      time.Duration         // how often TakeDue is called
	fresh     []*TagState           // due since the last TakeDue
	later     map[int64][]*TagState // due, by the tick from which they may be taken
	conflated uint64                // values replaced by newer ones before they were taken
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{tags: map[uns.Path]*TagState{}} }

// Define adds or updates a tag's metadata. It returns the tag's entry, for
// UpdateTags: an entry stays the tag's for the registry's life.
func (r *Registry) Define(t uns.Tag) *TagState {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ts, ok := r.tags[t.Path]; ok {
		ts.Tag = t
		return ts
	}
	ts := &TagState{Tag: t, Quality: uns.Bad}
	r.tags[t.Path] = ts
	return ts
}

// Update records samples as current values; historical and older samples
// never replace a newer current value.
func (r *Registry) Update(samples []uns.Sample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range samples {
		r.update(&samples[i], nil)
	}
}

// UpdateTags is Update for samples whose entries the caller has from
// Define: tags[i] is samples[i]'s (nil: looked up).
func (r *Registry) UpdateTags(samples []uns.Sample, tags []*TagState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range samples {
		r.update(&samples[i], tags[i])
	}
}

// update records one sample. The caller holds mu.
func (r *Registry) update(s *uns.Sample, ts *TagState) {
	if ts == nil || ts.Path != s.Path {
		var ok bool
		if ts, ok = r.tags[s.Path]; !ok {
			ts = &TagState{Tag: uns.Tag{Path: s.Path}}
			r.tags[s.Path] = ts
		}
	}
	// A null current value holds no time of its own: a value from before
	// it still replaces it (a variable that never changes keeps its old
	// source time).
	if s.Historical || (ts.HasVal && ts.Value.Kind != uns.KindNull && s.TS.Before(ts.TS)) {
		return
	}
	if s.Value.Kind == uns.KindNull && s.Quality != uns.Good && ts.HasVal {
		// A death or a lost device: keep the last known value, now bad.
		ts.Quality = s.Quality
	} else {
		ts.Value, ts.TS, ts.Quality, ts.HasVal = s.Value, s.TS, s.Quality, true
	}
	if r.watch {
		if ts.due {
			r.conflated++
		} else {
			ts.due = true
			r.fresh = append(r.fresh, ts)
		}
	}
}

// SetReasons records why calculated tags are bad ("": they are not).
func (r *Registry) SetReasons(reasons map[uns.Path]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, why := range reasons {
		if ts, ok := r.tags[p]; ok {
			ts.Reason = why
		}
	}
}

// Get returns one tag.
func (r *Registry) Get(p uns.Path) (TagState, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ts, ok := r.tags[p]
	if !ok {
		return TagState{}, false
	}
	return *ts, true
}

// List returns the tags under prefix ("" for all), sorted by path.
func (r *Registry) List(prefix string) []TagState {
	r.mu.RLock()
	out := make([]TagState, 0, len(r.tags))
	for p, ts := range r.tags {
		if prefix == "" || string(p) == prefix || strings.HasPrefix(string(p), strings.TrimSuffix(prefix, "/")+"/") {
			out = append(out, *ts)
		}
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Scan calls f with each tag under prefix ("" for all), in no order,
// under the registry's read lock: f must be quick and keep no pointer.
// It costs no copy of the namespace, as List does.
func (r *Registry) Scan(prefix string, f func(t *TagState)) {
	under := strings.TrimSuffix(prefix, "/") + "/"
	r.mu.RLock()
	defer r.mu.RUnlock()
	for p, ts := range r.tags {
		if prefix == "" || string(p) == prefix || strings.HasPrefix(string(p), under) {
			f(ts)
		}
	}
}

// Len is the number of tags.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.tags)
}
