package sim

import (
	"context"
	"fmt"
	"time"

	"github.com/calx-iiot/calx/connector"
	"github.com/calx-iiot/calx/uns"
)

// Tags of the clock connector.
const (
	TagCounter = "counter"
	TagFast    = "fast"
)

// ClockSettings of the clock connector.
type ClockSettings struct {
	// Period of the counter tag; default 100ms.
	Period time.Duration `yaml:"period"`
	// FastRate is the fast tag's values per second, at most 1000 (one per
	// millisecond, the resolution of Sparkplug timestamps); 0 turns it off.
	FastRate int `yaml:"fast_rate"`
	// FastTags is how many fast tags there are (fast, fast2, fast3, ...);
	// default 1.
	FastTags int `yaml:"fast_tags"`
	// Base is subtracted from the counts (unix milliseconds divided by the
	// step), so that the values stay small; default 2026-01-01.
	Base time.Time `yaml:"base"`
	// Interval between reads; each read reports every step since the last.
	Interval time.Duration `yaml:"interval"`
}

// Clock is a connector whose values come from the wall clock, like a plant
// counter that keeps counting while the edge is down: the counter tag is
// floor((now - base) / period), the fast tag the same at FastRate steps a
// second. Every step is reported with its own timestamp and no deadband,
// so which values exist is known exactly and tests can demand every one.
type Clock struct {
	s      ClockSettings
	fastDT time.Duration
	last   [2]int64 // last step reported of counter and of the fast tags
	fast   []string // names of the fast tags
}

var _ connector.Connector = (*Clock)(nil)

func init() {
	connector.RegisterSettings("clock", nil, quiet(NewClock))
}

// NewClock returns a clock connector.
func NewClock(device string, s ClockSettings) (*Clock, error) {
	if s.Period == 0 {
		s.Period = 100 * time.Millisecond
	}
	if s.Interval == 0 {
		s.Interval = 20 * time.Millisecond
	}
	if s.Base.IsZero() {
		s.Base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	switch {
	case s.Period < time.Millisecond:
		return nil, fmt.Errorf("clock %s: period %s: at least 1ms", device, s.Period)
	case s.FastRate < 0 || s.FastRate > 1000:
		return nil, fmt.Errorf("clock %s: fast_rate %d: from 0 to 1000 a second", device, s.FastRate)
	case s.FastTags < 0 || s.FastTags > 1000:
		return nil, fmt.Errorf("clock %s: fast_tags %d: from 0 to 1000", device, s.FastTags)
	case s.Interval < time.Millisecond:
		return nil, fmt.Errorf("clock %s: interval %s: at least 1ms", device, s.Interval)
	}
	c := &Clock{s: s, last: [2]int64{-1, -1}}
	if s.FastRate > 0 {
		c.fastDT = time.Second / time.Duration(s.FastRate)
		c.fast = []string{TagFast}
		for i := 2; i <= s.FastTags; i++ {
			c.fast = append(c.fast, fmt.Sprintf("%s%d", TagFast, i))
		}
	}
	return c, nil
}

// Tags lists the counter and, when enabled, the fast tag.
func (c *Clock) Tags() []connector.TagDef {
	tags := []connector.TagDef{{Name: TagCounter, DataType: uns.TypeInt64,
		Description: fmt.Sprintf("Steps of %s since %s", c.s.Period, c.s.Base.Format(time.RFC3339))}}
	for _, name := range c.fast {
		tags = append(tags, connector.TagDef{Name: name, DataType: uns.TypeInt64,
			Description: fmt.Sprintf("Steps of %s since %s", c.fastDT, c.s.Base.Format(time.RFC3339))})
	}
	return tags
}

// Step returns the value of a tag stepping every dt at time t.
func (c *Clock) step(t time.Time, dt time.Duration) int64 { return int64(t.Sub(c.s.Base) / dt) }

// At returns the counter's value at t.
func (c *Clock) At(t time.Time) int64 { return c.step(t, c.s.Period) }

// FastAt returns the fast tags' value at t.
func (c *Clock) FastAt(t time.Time) int64 {
	if c.fastDT == 0 {
		return 0
	}
	return c.step(t, c.fastDT)
}

// Run reports every step since the previous read, each at its own time.
func (c *Clock) Run(ctx context.Context, sink connector.Sink) error {
	t := time.NewTicker(c.s.Interval)
	defer t.Stop()
	var rs []connector.Reading
	for {
		now := time.Now()
		rs = rs[:0]
		rs = c.appendSteps(rs, 0, []string{TagCounter}, c.s.Period, now)
		if c.fastDT > 0 {
			rs = c.appendSteps(rs, 1, c.fast, c.fastDT, now)
		}
		if len(rs) > 0 {
			sink.Emit(rs)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// appendSteps adds the readings of one tag from its last reported step to
// now. The first read after a start reports the current step only: what
// was not read while the edge was down is not invented.
func (c *Clock) appendSteps(rs []connector.Reading, i int, tags []string, dt time.Duration, now time.Time) []connector.Reading {
	cur := c.step(now, dt)
	from := c.last[i] + 1
	if c.last[i] < 0 {
		from = cur
	}
	for v := from; v <= cur; v++ {
		for _, tag := range tags {
			rs = append(rs, connector.Reading{Tag: tag, TS: c.s.Base.Add(time.Duration(v) * dt), Value: uns.Int(v)})
		}
	}
	c.last[i] = cur
	return rs
}
