package modbus

import (
	"fmt"
	"time"

	"github.com/calx-iiot/calx/connector"
	"github.com/calx-iiot/calx/uns"
)

// Most a refused tag waits between two tries of its address.
const maxProbeBackoff = 5 * time.Minute

// replan makes the read plan from the tags' isolation states: tags the
// device answers in blocks as the settings allow, or in smaller ones
// where a block was refused though each of its tags answers alone (a gap
// the device does not map); each refused tag alone, when its backoff
// ends. It depends on the tags alone, so that planning again, however
// often, converges.
func (d *Device) replan(now time.Time) {
	var normal, noGaps []*Tag
	var out []*block
	for _, t := range d.s.Tags {
		switch {
		case t.bad != nil:
			out = append(out, &block{area: t.Area, start: t.Address, count: uint16(t.size()), tags: []*Tag{t},
				every: max(t.every, t.backoff), due: now.Add(t.backoff)})
		case t.split >= 2:
			out = append(out, &block{area: t.Area, start: t.Address, count: uint16(t.size()), tags: []*Tag{t}, every: t.every})
		case t.split == 1:
			noGaps = append(noGaps, t)
		default:
			normal = append(normal, t)
		}
	}
	out = append(out, planAll(normal, d.s.MaxBlock, d.s.MaxGap)...)
	out = append(out, planAll(noGaps, d.s.MaxBlock, 0)...)
	// Blocks keep their turn: a tag read in this cycle is not due at once.
	due := map[*Tag]time.Time{}
	for _, b := range d.blocks {
		for _, t := range b.tags {
			due[t] = b.due
		}
	}
	for _, b := range out {
		if len(b.tags) == 1 && b.tags[0].bad != nil {
			continue
		}
		for _, t := range b.tags {
			if at, ok := due[t]; ok && at.After(b.due) {
				b.due = at
			}
		}
	}
	d.blocks = out
}

// isolate handles a block the device refused (err, an exception). A
// block of one tag: the tag is refused, and waits twice as long before
// its next try (up to five minutes). A block of several: each tag is read
// alone, once; a refused one is marked so, one that answers is read in
// smaller blocks from now on. It says whether the plan must change.
func (d *Device) isolate(b *block, err error, rs []connector.Reading, now time.Time) ([]connector.Reading, bool) {
	if len(b.tags) == 1 {
		t := b.tags[0]
		first := t.bad == nil
		d.refuse(t, err, first)
		return append(rs, connector.Reading{Tag: t.Name, TS: now, Value: uns.Null, Quality: uns.Bad}), true
	}
	for _, t := range b.tags {
		regs, bits, err := d.read(t.Area, t.Address, uint16(t.size()))
		now := time.Now()
		if err != nil {
			if !isRefusal(err) {
				// Not a refusal (the connection went, or an exception
				// that passes): the next cycle tries the block again.
				d.stats.LastError = err.Error()
				d.stats.Errors++
				return rs, true
			}
			d.refuse(t, err, true)
			rs = append(rs, connector.Reading{Tag: t.Name, TS: now, Value: uns.Null, Quality: uns.Bad})
			continue
		}
		t.split = min(t.split+1, 2)
		rs = append(rs, d.reading(t, regs, bits, 0, now))
	}
	return rs, true
}

// refuse marks a tag refused by the device and sets its next try.
func (d *Device) refuse(t *Tag, err error, first bool) {
	t.bad = fmt.Errorf("tag %s (%s %d): %w", t.Name, t.Area, t.Address, err)
	if first {
		t.backoff = t.every
		d.log.Warn("tag refused by the device; its address is tried alone from now on", "tag", t.Name, "area", t.Area, "address", t.Address, "err", err)
	} else {
		t.backoff = min(2*t.backoff, maxProbeBackoff)
	}
	d.stats.Errors++
	d.stats.LastError = t.bad.Error()
}
