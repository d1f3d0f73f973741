package transform

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// The engine's state, saved with the stream sequence and restored after
// a restart.

// snapshot is the engine's state as saved: by key, with the definition it
// was made under, so that a changed definition starts afresh.
type snapshot struct {
	Calcs   map[string]*calc    `json:"calcs"`
	Alarms  map[string]*Alarm   `json:"alarms"`
	Cycles  map[string]*Cycler  `json:"cycles"`
	Latest  []byte              `json:"latest"` // a batch (uns.AppendBatch) of the latest inputs
	Devices map[string]devState `json:"devices"`
}

// devState is a device's place in time and its held values.
type devState struct {
	T         time.Time `json:"t"`
	Holding   bool      `json:"holding"`
	Held      []byte    `json:"held"` // a batch
	HoldSince time.Time `json:"hold_since"`
	LastHist  time.Time `json:"last_hist"`
	Late      uint64    `json:"late"`
}

// Snapshot returns the engine's state, for Restore after a restart.
func (e *Engine) Snapshot() ([]byte, error) {
	s := snapshot{Calcs: map[string]*calc{}, Alarms: map[string]*Alarm{}, Cycles: map[string]*Cycler{}, Devices: map[string]devState{}}
	var latest []uns.Sample
	for _, d := range e.devices {
		for _, c := range d.calcs {
			s.Calcs[string(c.Out)] = c
		}
		for _, a := range d.alarms {
			s.Alarms[a.Path] = a
		}
		for _, c := range d.cycles {
			s.Cycles[c.Machine+"/"+c.Def.Name] = c
		}
		for _, v := range d.latest {
			latest = append(latest, v)
		}
		s.Devices[d.path] = devState{T: d.T, Holding: d.holding, Held: uns.AppendBatch(nil, d.held),
			HoldSince: d.holdSince, LastHist: d.lastHist, Late: d.late}
	}
	s.Latest = uns.AppendBatch(nil, latest)
	return json.Marshal(s)
}

// Restore takes over the state of a snapshot for every transform whose
// definition is the same; the others start afresh.
func (e *Engine) Restore(b []byte) error {
	var s snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("transform state: %w", err)
	}
	batch, err := uns.DecodeBatch(nil, s.Latest)
	if err != nil {
		return fmt.Errorf("transform state: latest values: %w", err)
	}
	latest := map[uns.Path]uns.Sample{}
	for _, v := range batch {
		latest[v.Path] = v
	}
	same := func(a, b any) bool {
		x, _ := json.Marshal(a)
		y, _ := json.Marshal(b)
		return string(x) == string(y)
	}
	for _, d := range e.devices {
		for _, c := range d.calcs {
			if old, ok := s.Calcs[string(c.Out)]; ok && same(old.Def, c.Def) && len(old.Sites) == len(c.Sites) {
				c.Sites, c.Last = old.Sites, old.Last
			}
		}
		var fresh []*Alarm
		for i, a := range d.alarms {
			old, ok := s.Alarms[a.Path]
			if ok && same(old.Def, a.Def) {
				d.alarms[i] = old
				continue
			}
			if ok { // a new limit: keep what an operator did
				a.Acked, a.ShelvedUntil = old.Acked || !old.Active, old.ShelvedUntil
			}
			fresh = append(fresh, a)
		}
		for i, c := range d.cycles {
			if old, ok := s.Cycles[c.Machine+"/"+c.Def.Name]; ok && same(old.Def, c.Def) {
				d.cycles[i] = old
			}
		}
		for _, t := range d.tags() {
			if v, ok := latest[uns.Path(d.path+"/"+t)]; ok {
				d.latest[t] = v
			}
		}
		// An alarm made afresh is suppressed if the plant is in its state
		// now: the state tag may not change again for a long time.
		for _, a := range fresh {
			if sw := a.Def.SuppressWhen; sw != nil && sw.Tag != "" {
				if v, ok := d.latest[sw.Tag]; ok {
					a.Suppressed, _ = a.suppresses(v)
					a.SuppressTS = v.TS
				}
			}
		}
		// An alarm suppressed by another is so while that one is active,
		// whichever of the two was made afresh.
		for _, f := range d.alarms {
			if sw := f.Def.SuppressWhen; sw != nil && sw.Alarm != "" {
				for _, l := range d.alarms {
					if l.Def.Name == sw.Alarm {
						f.Suppressed = l.Active
					}
				}
			}
		}
		if ds, ok := s.Devices[d.path]; ok {
			held, err := uns.DecodeBatch(nil, ds.Held)
			if err != nil {
				return fmt.Errorf("transform state: held values of %s: %w", d.path, err)
			}
			d.T, d.holding, d.held, d.holdSince, d.lastHist, d.late = ds.T, ds.Holding, held, ds.HoldSince, ds.LastHist, ds.Late
		}
	}
	return nil
}
