package transform

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// Device is what the transforms do for one device (machine): its
// calculated tags, cycles and alarms, templates and overrides resolved.
type Device struct {
	Path       string     `json:"path"` // the device's UNS path
	Calculated []CalcDef  `json:"calculated,omitempty"`
	Cycles     []CycleDef `json:"cycles,omitempty"`
	Alarms     []AlarmDef `json:"alarms,omitempty"`
}

// Output is what samples or time bring about: calculated values and the
// tags of finished cycles (Samples), finished cycles, alarm transitions.
type Output struct {
	Samples     []uns.Sample
	Cycles      []Cycle
	Transitions []Transition
	// Errors are expressions that failed, one per failure.
	Errors []error
	// Reasons says, for every calculated tag computed, why it is bad ("" when
	// it is not).
	Reasons map[uns.Path]string
}

func (o *Output) add(p Output) {
	for k, v := range p.Reasons {
		o.reason(k, v)
	}
	o.Samples = append(o.Samples, p.Samples...)
	o.Cycles = append(o.Cycles, p.Cycles...)
	o.Transitions = append(o.Transitions, p.Transitions...)
	o.Errors = append(o.Errors, p.Errors...)
}

func (o *Output) reason(p uns.Path, r string) {
	if o.Reasons == nil {
		o.Reasons = map[uns.Path]string{}
	}
	o.Reasons[p] = r
}

// Empty reports whether nothing came of it.
func (o *Output) Empty() bool {
	return len(o.Samples) == 0 && len(o.Cycles) == 0 && len(o.Transitions) == 0 && len(o.Errors) == 0
}

// device is the state of one device's transforms.
type device struct {
	// T is the newest time the device's transforms have processed.
	T time.Time
	// While holding, live values wait in held for the historical values
	// an edge's store-and-forward backlog brings.
	holding             bool
	held                []uns.Sample
	holdSince, lastHist time.Time
	late                uint64

	path   string
	calcs  []*calc
	byTag  map[string][]*calc // the calculated tags that read a tag
	alarms []*Alarm
	cycles []*Cycler
	latest map[string]uns.Sample // by tag name
}

// Engine runs the transforms of every device. It is not safe for
// concurrent use.
type Engine struct {
	reorder Reorder
	devices map[string]*device
	// byTag routes a sample's path to its device and tag name.
	byTag map[uns.Path]route
}

type route struct {
	dev *device
	tag string
}

// Reorder is how the engine puts a device's values back in time order
// after an outage. An edge that was cut off sends, once back, its live
// values and, beside them, what it buffered meanwhile, flagged historical.
// A device's live value more than Gap after the newest value processed
// starts a hold: live values wait while historical ones are processed,
// until Hold has passed without a historical value. Values older than
// what a transform with state has processed (later than that) are left
// out by it, and counted. Zero Gap: no holds.
type Reorder struct {
	Gap  time.Duration
	Hold time.Duration
}

// DefaultReorder waits 3 s for a backlog after a gap of 3 s.
var DefaultReorder = Reorder{Gap: 3 * time.Second, Hold: 3 * time.Second}

// SetReorder sets how values are put back in order.
func (e *Engine) SetReorder(r Reorder) { e.reorder = r }

// Late counts the values that came older than what their device's
// transforms had processed.
func (e *Engine) Late() uint64 {
	var n uint64
	for _, d := range e.devices {
		n += d.late
	}
	return n
}

// NewEngine builds the transforms of the devices; a definition that does
// not compile is left out and returned in the error, the rest run.
func NewEngine(devs []Device) (*Engine, error) {
	e := &Engine{devices: map[string]*device{}, byTag: map[uns.Path]route{}}
	var errs []error
	for _, d := range devs {
		ds := &device{path: d.Path, latest: map[string]uns.Sample{}, byTag: map[string][]*calc{}}
		for _, cd := range d.Calculated {
			c, err := compileCalc(d.Path, cd)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s/%s: %w", d.Path, cd.Name, err))
				continue
			}
			ds.calcs = append(ds.calcs, c)
			for _, t := range c.Inputs {
				ds.byTag[t] = append(ds.byTag[t], c)
			}
		}
		for _, ad := range d.Alarms {
			if ad.Disabled {
				continue
			}
			if err := ad.Validate(d.Path + " alarm " + ad.Name); err != nil {
				errs = append(errs, err)
				continue
			}
			ds.alarms = append(ds.alarms, NewAlarm(d.Path, ad))
		}
		if err := ValidateAlarms(d.Path, d.Alarms); err != nil {
			errs = append(errs, err)
		}
		// The alarms that suppress others go first, so that one sample
		// that raises both finds the other suppressed already.
		slices.SortStableFunc(ds.alarms, func(a, b *Alarm) int { return cmp.Compare(followsAlarm(a), followsAlarm(b)) })
		for _, cd := range d.Cycles {
			if err := cd.Validate(d.Path + " cycle " + cd.Name); err != nil {
				errs = append(errs, err)
				continue
			}
			ds.cycles = append(ds.cycles, NewCycler(d.Path, cd))
		}
		e.devices[d.Path] = ds
		for _, tag := range ds.tags() {
			e.byTag[uns.Path(d.Path+"/"+tag)] = route{ds, tag}
		}
	}
	return e, errors.Join(errs...)
}

// tags are the device's tags the transforms read.
func (d *device) tags() []string {
	var out []string
	add := func(t string) {
		if t != "" && !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	for _, c := range d.calcs {
		for _, t := range c.Inputs {
			add(t)
		}
	}
	for _, a := range d.alarms {
		add(a.Def.Tag)
		add(a.SetpointTag())
		if sw := a.Def.SuppressWhen; sw != nil {
			add(sw.Tag)
		}
	}
	for _, c := range d.cycles {
		for _, t := range c.Tags() {
			add(t)
		}
	}
	return out
}

// OutputTags are the tags the transforms write: calculated tags and the
// last cycle's values, with unit and type, for the namespace and history.
func (e *Engine) OutputTags() []uns.Tag {
	var out []uns.Tag
	for _, d := range e.sortedDevices() {
		for _, c := range d.calcs {
			out = append(out, uns.Tag{Path: c.Out, DataType: uns.TypeFloat64, Unit: c.Def.Unit, Description: c.Def.Description})
		}
		for _, cy := range d.cycles {
			base := d.path + "/_cycles/" + cy.Def.Name + "/"
			out = append(out, uns.Tag{Path: uns.Path(base + "duration_s"), DataType: uns.TypeFloat64, Unit: "s", Description: "Duration of the last " + cy.Def.Name + " cycle"})
			for _, a := range cy.Def.Aggregates {
				out = append(out, uns.Tag{Path: uns.Path(base + a.Name), DataType: uns.TypeFloat64, Unit: a.Unit,
					Description: fmt.Sprintf("%s of %s over the last %s cycle", a.Fn, a.Tag, cy.Def.Name)})
			}
		}
	}
	return out
}

func (e *Engine) sortedDevices() []*device {
	keys := slices.Sorted(maps.Keys(e.devices))
	out := make([]*device, len(keys))
	for i, k := range keys {
		out[i] = e.devices[k]
	}
	return out
}

// Reads says whether a transform reads the tag at path: Process ignores
// every other sample, so a caller may leave them out.
func (e *Engine) Reads(path []byte) bool {
	_, ok := e.byTag[uns.Path(path)]
	return ok
}

// Process feeds samples in the order they came and returns what follows.
// Calculated values are fed on to the device's alarms, cycles and other
// calculated tags. A historical sample older than what a transform has
// seen is left out by the transforms that keep state over time.
//
// Samples of one instant go to a cycle's trigger last: a cycle ends with
// the values of the instant it ends in (and the next one starts with them).
//
// now is the time of arrival, for holds (see Reorder).
func (e *Engine) Process(samples []uns.Sample, now time.Time) Output {
	var out Output
	if !slices.IsSortedFunc(samples, e.order) {
		samples = slices.Clone(samples)
		slices.SortStableFunc(samples, e.order)
	}
	for _, s := range samples {
		r, ok := e.byTag[s.Path]
		if !ok {
			continue
		}
		e.feed(r.dev, r.tag, s, now, &out)
	}
	return out
}

func (e *Engine) feed(d *device, tag string, s uns.Sample, now time.Time, out *Output) {
	if s.Historical {
		if d.holding {
			d.lastHist = now
			e.release(d, s.TS, out)
		}
		if s.TS.Before(d.T) {
			d.late++
		}
		out.add(d.apply(tag, s))
		return
	}
	if d.holding {
		d.held = append(d.held, s)
		return
	}
	if e.reorder.Gap > 0 && !d.T.IsZero() && s.TS.Sub(d.T) > e.reorder.Gap {
		d.holding, d.holdSince, d.lastHist = true, now, time.Time{}
		d.held = append(d.held, s)
		return
	}
	out.add(d.apply(tag, s))
}

// release processes the held values up to upTo (all of them for a zero
// upTo), in time order.
func (e *Engine) release(d *device, upTo time.Time, out *Output) {
	slices.SortStableFunc(d.held, e.order)
	n := 0
	for n < len(d.held) && (upTo.IsZero() || !d.held[n].TS.After(upTo)) {
		s := d.held[n]
		out.add(d.apply(strings.TrimPrefix(string(s.Path), d.path+"/"), s))
		n++
	}
	d.held = append(d.held[:0], d.held[n:]...)
}

func (d *device) apply(tag string, s uns.Sample) Output {
	if s.TS.After(d.T) {
		d.T = s.TS
	}
	return d.observe(tag, s, 0)
}

// order sorts samples by time, a cycle's trigger after the other
// samples of its instant.
func (e *Engine) order(a, b uns.Sample) int {
	if c := a.TS.Compare(b.TS); c != 0 {
		return c
	}
	ta, tb := e.isTrigger(a.Path), e.isTrigger(b.Path)
	switch {
	case ta && !tb:
		return 1
	case tb && !ta:
		return -1
	}
	return 0
}

func (e *Engine) isTrigger(p uns.Path) bool {
	r, ok := e.byTag[p]
	if !ok {
		return false
	}
	for _, c := range r.dev.cycles {
		if c.Def.Tag == r.tag {
			return true
		}
	}
	return false
}

// followsAlarm is 1 for an alarm another alarm suppresses, 0 otherwise.
func followsAlarm(a *Alarm) int {
	if sw := a.Def.SuppressWhen; sw != nil && sw.Alarm != "" {
		return 1
	}
	return 0
}

// follow suppresses, or ends the suppression of, the alarms that the
// alarms raised or cleared in trs suppress. Those alarms suppress no
// other (ValidateAlarms), so what they do in turn needs no following.
func (d *device) follow(trs []Transition) []Transition {
	var out []Transition
	for _, tr := range trs {
		if tr.Event != EventRaise && tr.Event != EventClear {
			continue
		}
		_, name, _ := uns.SplitAlarmPath(tr.Alarm)
		for _, f := range d.alarms {
			if sw := f.Def.SuppressWhen; sw != nil && sw.Alarm == name {
				out = append(out, f.suppress(tr.TS, tr.Event == EventRaise)...)
			}
		}
	}
	return out
}

// maxDepth bounds calculated tags computed from calculated tags.
const maxDepth = 4

func (d *device) observe(tag string, s uns.Sample, depth int) Output {
	var out Output
	if cur, ok := d.latest[tag]; !ok || !s.TS.Before(cur.TS) {
		d.latest[tag] = s
	}
	// Calculated tags first: alarms and cycles may read them.
	var derived []uns.Sample
	for _, c := range d.byTag[tag] {
		if len(c.Sites) > 0 && s.TS.Before(c.Last) {
			continue // late for a function of time: its state is past it
		}
		v, reason, err := c.eval(s.TS, s.Historical, func(t string) (uns.Sample, bool) { x, ok := d.latest[t]; return x, ok })
		if err != nil {
			out.Errors = append(out.Errors, err)
		}
		out.reason(v.Path, reason)
		out.Samples = append(out.Samples, v)
		derived = append(derived, v)
	}
	for _, a := range d.alarms {
		var trs []Transition
		if sw := a.Def.SuppressWhen; sw != nil && sw.Tag != "" && tag == sw.Tag {
			trs = a.ObserveSuppression(s)
		}
		switch tag {
		case a.Def.Tag:
			trs = append(trs, a.Observe(s)...)
		case a.SetpointTag():
			trs = append(trs, a.ObserveSetpoint(s)...)
		}
		out.Transitions = append(out.Transitions, trs...)
		out.Transitions = append(out.Transitions, d.follow(trs)...)
	}
	for _, cy := range d.cycles {
		if c, ok := cy.Observe(tag, s); ok {
			out.Cycles = append(out.Cycles, c)
			out.Samples = append(out.Samples, cycleSamples(c)...)
		}
	}
	if depth < maxDepth {
		for _, v := range derived {
			out.add(d.observe(strings.TrimPrefix(string(v.Path), d.path+"/"), v, depth+1))
		}
	}
	return out
}

// cycleSamples are the tags with a finished cycle's values, at its end.
func cycleSamples(c Cycle) []uns.Sample {
	base := c.Machine + "/_cycles/" + c.Name + "/"
	out := make([]uns.Sample, 0, len(c.Values))
	for _, k := range slices.Sorted(maps.Keys(c.Values)) {
		out = append(out, uns.Sample{Path: uns.Path(base + k), TS: c.End, Value: uns.Float(c.Values[k]), Quality: uns.Good})
	}
	return out
}

// Tick moves every alarm to now: delays that ran out, stale tags, shelving
// that expired.
func (e *Engine) Tick(now time.Time) Output {
	var out Output
	for _, d := range e.sortedDevices() {
		if d.holding && !now.Before(later(d.holdSince, d.lastHist).Add(e.reorder.Hold)) {
			e.release(d, time.Time{}, &out)
			d.holding = false
		}
		for _, a := range d.alarms {
			trs := a.Tick(now)
			out.Transitions = append(out.Transitions, trs...)
			out.Transitions = append(out.Transitions, d.follow(trs)...)
		}
	}
	return out
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
