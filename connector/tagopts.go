package connector

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// TagOptions are the settings of a tag that every connector takes, inline in
// the tag's YAML next to its address: unit, scaling from raw to engineering
// units, report by exception, and whether it may be written.
type TagOptions struct {
	Unit        string `yaml:"unit"`
	Description string `yaml:"description"`
	// Scaling: eng = raw*scale + offset, or a range raw_low..raw_high
	// mapped linearly onto eng_low..eng_high. eng_low..eng_high is also the
	// span of deadband_percent, and what clamp holds a value to.
	Scale   float64 `yaml:"scale"` // default 1
	Offset  float64 `yaml:"offset"`
	RawLow  float64 `yaml:"raw_low"`
	RawHigh float64 `yaml:"raw_high"`
	EngLow  float64 `yaml:"eng_low"`
	EngHigh float64 `yaml:"eng_high"`
	Clamp   bool    `yaml:"clamp"`
	// Report by exception: a value goes out when it moved by deadband
	// (engineering units) or deadband_percent of the span, at most once per
	// min_interval, and at least every heartbeat unchanged.
	Deadband    float64       `yaml:"deadband"`
	DeadbandPct float64       `yaml:"deadband_percent"`
	MinInterval time.Duration `yaml:"min_interval"`
	Heartbeat   time.Duration `yaml:"heartbeat"`
	Writable    bool          `yaml:"writable"`
	// WriteMin and WriteMax bound what may be written, in engineering
	// units, within what the device's type takes.
	WriteMin *float64 `yaml:"write_min"`
	WriteMax *float64 `yaml:"write_max"`
	// Alarm limits, in engineering units: low and high.
	AlarmLow  *float64 `yaml:"alarm_low"`
	AlarmHigh *float64 `yaml:"alarm_high"`
	// Interval is the tag's sampling interval where the connector samples
	// per tag (Modbus, OPC UA); default the device's interval.
	Interval time.Duration `yaml:"interval"`
}

// Check reports what is wrong with the options.
func (o *TagOptions) Check() error {
	var errs []error
	if o.RawHigh != o.RawLow && o.EngHigh == o.EngLow {
		errs = append(errs, errors.New("raw_low/raw_high: eng_low and eng_high are needed too"))
	}
	if o.RawHigh != o.RawLow && (o.Scale != 0 && o.Scale != 1 || o.Offset != 0) {
		errs = append(errs, errors.New("scale/offset and raw_low/raw_high: one of the two"))
	}
	if o.Clamp && o.EngHigh <= o.EngLow {
		errs = append(errs, errors.New("clamp: needs eng_low below eng_high"))
	}
	for name, v := range map[string]float64{"deadband": o.Deadband, "deadband_percent": o.DeadbandPct} {
		if v < 0 || math.IsNaN(v) {
			errs = append(errs, fmt.Errorf("%s %v: not negative", name, v))
		}
	}
	if o.MinInterval < 0 || o.Heartbeat < 0 {
		errs = append(errs, errors.New("min_interval, heartbeat: not negative"))
	}
	if o.AlarmLow != nil && o.AlarmHigh != nil && *o.AlarmLow >= *o.AlarmHigh {
		errs = append(errs, fmt.Errorf("alarm_low %v: below alarm_high %v", *o.AlarmLow, *o.AlarmHigh))
	}
	if o.WriteMin != nil && o.WriteMax != nil && *o.WriteMin > *o.WriteMax {
		errs = append(errs, fmt.Errorf("write_min %v: not above write_max %v", *o.WriteMin, *o.WriteMax))
	}
	if o.Interval != 0 && o.Interval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("interval %s: at least 10ms", o.Interval))
	}
	return errors.Join(errs...)
}

// Scaled reports whether raw values are changed on the way in.
func (o *TagOptions) Scaled() bool {
	return o.RawHigh != o.RawLow || o.Scale != 0 && o.Scale != 1 || o.Offset != 0
}

// ToEng maps a raw value to engineering units, clamped if asked; values that
// are not numbers pass unchanged.
func (o *TagOptions) ToEng(v uns.Value) uns.Value {
	f, ok := v.AsFloat()
	if !ok || v.Kind == uns.KindBool || v.Kind == uns.KindString {
		return v
	}
	switch {
	case o.RawHigh != o.RawLow:
		f = o.EngLow + (f-o.RawLow)*(o.EngHigh-o.EngLow)/(o.RawHigh-o.RawLow)
	case o.Scaled():
		f = f*o.scale() + o.Offset
	case !o.Clamp:
		return v
	}
	if o.Clamp && o.EngHigh > o.EngLow {
		f = math.Max(o.EngLow, math.Min(o.EngHigh, f))
	}
	return uns.Float(f)
}

// ToRaw maps an engineering value back to raw, for writes.
func (o *TagOptions) ToRaw(v uns.Value) uns.Value {
	f, ok := v.AsFloat()
	if !ok || v.Kind == uns.KindBool || v.Kind == uns.KindString {
		return v
	}
	switch {
	case o.RawHigh != o.RawLow:
		return uns.Float(o.RawLow + (f-o.EngLow)*(o.RawHigh-o.RawLow)/(o.EngHigh-o.EngLow))
	case o.Scaled():
		return uns.Float((f - o.Offset) / o.scale())
	}
	return v
}

func (o *TagOptions) scale() float64 {
	if o.Scale == 0 {
		return 1
	}
	return o.Scale
}

// Def is the tag's definition for the edge. A scaled tag's values are
// float64 whatever the raw type.
func (o *TagOptions) Def(name string, dt uns.DataType) TagDef {
	if o.Scaled() && (dt == uns.TypeInt64 || dt == uns.TypeFloat64) {
		dt = uns.TypeFloat64
	}
	return TagDef{Name: name, DataType: dt, Unit: o.Unit, Low: o.EngLow, High: o.EngHigh, Description: o.Description,
		Writable: o.Writable, Deadband: uns.Deadband{Abs: o.Deadband, Percent: o.DeadbandPct, MinInterval: o.MinInterval, Heartbeat: o.Heartbeat},
		AlarmLow: o.AlarmLow, AlarmHigh: o.AlarmHigh, WriteMin: o.WriteMin, WriteMax: o.WriteMax}
}
