package edge

import (
	"time"
)

// Each device connection's figures, for the status API and node metrics.

// ConnStatus is the state of one device's connection.
type ConnStatus struct {
	Device    string `json:"device"`
	Connected bool   `json:"connected"`
	LastError string `json:"last_error,omitempty"`
	Reads     uint64 `json:"reads"`  // reads handed over by the connector
	Errors    uint64 `json:"errors"` // times the device was lost
	// Reads and errors per second, over the last 5 to 10 seconds (over the
	// time since the previous status when that is longer).
	ReadsPerSec  float64       `json:"reads_per_sec"`
	ErrorsPerSec float64       `json:"errors_per_sec"`
	Latency      time.Duration `json:"latency_ns"`

	alias uint64 // first of the device's node metrics
}

// rateWindow turns a device's read and error counters into rates: it keeps
// the counters as they were at the start of the current window and of the
// one before, and a window lasts at least rateEvery.
type rateWindow struct {
	prev, cur rateMark
}

type rateMark struct {
	at            time.Time
	reads, errors uint64
}

const rateEvery = 5 * time.Second

func (w *rateWindow) rates(now time.Time, reads, errors uint64) (rps, eps float64) {
	if w.cur.at.IsZero() {
		w.prev = rateMark{now, reads, errors}
		w.cur = w.prev
	} else if now.Sub(w.cur.at) >= rateEvery {
		w.prev, w.cur = w.cur, rateMark{now, reads, errors}
	}
	dt := now.Sub(w.prev.at).Seconds()
	if dt <= 0 {
		return 0, 0
	}
	return float64(reads-w.prev.reads) / dt, float64(errors-w.prev.errors) / dt
}

// LatencyReporter is implemented by connectors that time their reads.
type LatencyReporter interface {
	Latency() time.Duration
}

// Connections returns the status of every device's connection.
func (e *Edge) Connections() []ConnStatus {
	e.mu.Lock()
	now := time.Now()
	out := make([]ConnStatus, 0, len(e.devices))
	var timed []LatencyReporter // by index of out
	for _, d := range e.devices {
		if d.retired {
			continue
		}
		cs := ConnStatus{Device: d.ID, Connected: !d.lost && d.reads > 0, LastError: d.lastErr, Reads: d.reads, Errors: d.errors}
		cs.ReadsPerSec, cs.ErrorsPerSec = d.rate.rates(now, d.reads, d.errors)
		cs.alias = d.connAlias
		lr, _ := d.Connector.(LatencyReporter)
		timed = append(timed, lr)
		out = append(out, cs)
	}
	e.mu.Unlock()
	// Not under the edge's lock: a connector hands its values over while
	// holding its own, and that takes the edge's.
	for i, lr := range timed {
		if lr != nil {
			out[i].Latency = lr.Latency()
		}
	}
	return out
}
