package cloud

import "time"

// The registry's changes for the UNS JSON republisher. Update notes a tag
// whose current value changed once (TagState.due) in fresh; TakeDue, called
// every tick, takes the fresh tags not taken within the interval, and files
// the others by the tick from which they may be taken. So each tag is
// looked at about twice per interval however often TakeDue runs, and the
// registry's lock is held for the changed tags only.

// Watch makes Update note the tags whose current value changed, for
// TakeDue, which is called every tick and takes a tag at most once per
// every.
func (r *Registry) Watch(every, tick time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.watch, r.every, r.tick = true, every, max(tick, time.Millisecond)
	r.later = map[int64][]*TagState{}
}

// TakeDue appends to dst the tags whose current value changed since they
// were last taken and that may be taken at now, and returns dst and how
// many values newer ones replaced before they were taken, in all.
func (r *Registry) TakeDue(dst []TagState, now time.Time) ([]TagState, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	take := func(ts *TagState) {
		ts.due, ts.taken = false, now
		dst = append(dst, *ts)
	}
	tick := int64(r.tick)
	for _, ts := range r.fresh {
		at := ts.taken.Add(r.every)
		if ts.taken.IsZero() || !at.After(now) {
			take(ts)
			continue
		}
		k := (at.UnixNano() + tick - 1) / tick
		r.later[k] = append(r.later[k], ts)
	}
	clear(r.fresh)
	r.fresh = r.fresh[:0]
	for k, tags := range r.later {
		if k*tick <= now.UnixNano() {
			for _, ts := range tags {
				take(ts)
			}
			delete(r.later, k)
		}
	}
	return dst, r.conflated
}
