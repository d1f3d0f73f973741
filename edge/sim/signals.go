package sim

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"time"

	"github.com/calx-iiot/calx/connector"
	"github.com/calx-iiot/calx/uns"
)

// Signal kinds of the signals connector.
const (
	SignalSine       = "sine"
	SignalRamp       = "ramp"
	SignalCounter    = "counter"
	SignalRandomWalk = "random_walk"
	SignalSquare     = "square"
	SignalStep       = "step"
)

// Signal is one simulated tag.
type Signal struct {
	Name string `yaml:"name"`
	Kind string `yaml:"kind"`
	// Low and High bound the signal (sine, ramp, random walk, square and step swing between them).
	Low  float64 `yaml:"low"`
	High float64 `yaml:"high"`
	// Period of a sine, ramp or square; the time between steps of a step signal.
	Period time.Duration `yaml:"period"`
	// Step is the counter's increment and the largest move of a random walk or step signal.
	Step float64 `yaml:"step"`
	// Noise is the standard deviation of Gaussian noise added to the value.
	Noise    float64 `yaml:"noise"`
	Unit     string  `yaml:"unit"`
	Deadband float64 `yaml:"deadband"`
}

// SignalSettings of the signals connector.
type SignalSettings struct {
	Interval time.Duration `yaml:"interval"`
	Seed     uint64        `yaml:"seed"`
	Signals  []Signal      `yaml:"signals"`
}

// Signals is a connector of test signals, so that trials need no hardware.
type Signals struct {
	s     SignalSettings
	rng   *rand.Rand
	state []float64
	start time.Time
	lastT []time.Time
}

var _ connector.Connector = (*Signals)(nil)

func init() {
	connector.RegisterSettings("signals", nil, quiet(NewSignals))
}

// NewSignals validates the settings.
func NewSignals(device string, s SignalSettings) (*Signals, error) {
	if s.Interval == 0 {
		s.Interval = time.Second
	}
	var errs []error
	if s.Interval < time.Millisecond {
		errs = append(errs, fmt.Errorf("interval %s: at least 1ms", s.Interval))
	}
	if len(s.Signals) == 0 {
		errs = append(errs, errors.New("signals: at least one"))
	}
	seen := map[string]bool{}
	for i := range s.Signals {
		g := &s.Signals[i]
		at := fmt.Sprintf("signals[%d] (%s)", i, g.Name)
		if err := uns.Path(g.Name).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", at, err))
		}
		if seen[g.Name] {
			errs = append(errs, fmt.Errorf("%s: name used twice", at))
		}
		seen[g.Name] = true
		switch g.Kind {
		case SignalSine, SignalRamp, SignalSquare, SignalStep:
			if g.Period <= 0 {
				g.Period = time.Minute
			}
		case SignalCounter, SignalRandomWalk:
		default:
			errs = append(errs, fmt.Errorf("%s kind %q: want sine, ramp, counter, random_walk, square or step", at, g.Kind))
		}
		if g.High == g.Low && g.Kind != SignalCounter {
			g.High = g.Low + 100
		}
		if g.High < g.Low && g.Kind != SignalCounter {
			errs = append(errs, fmt.Errorf("%s: high %v below low %v", at, g.High, g.Low))
		}
		if g.Step == 0 {
			g.Step = 1
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("signals %s: %w", device, err)
	}
	seed := s.Seed
	if seed == 0 {
		h := fnv.New64a()
		h.Write([]byte(device))
		seed = h.Sum64()
	}
	g := &Signals{s: s, rng: rand.New(rand.NewPCG(seed, seed+1)), state: make([]float64, len(s.Signals)), lastT: make([]time.Time, len(s.Signals))}
	for i, sig := range s.Signals {
		g.state[i] = sig.Low
		if sig.Kind == SignalRandomWalk || sig.Kind == SignalStep {
			g.state[i] = (sig.Low + sig.High) / 2
		}
	}
	return g, nil
}

// Tags declares the signals.
func (g *Signals) Tags() []connector.TagDef {
	var out []connector.TagDef
	for _, s := range g.s.Signals {
		dt := uns.TypeFloat64
		if s.Kind == SignalCounter && s.Noise == 0 && s.Step == math.Trunc(s.Step) {
			dt = uns.TypeInt64
		}
		out = append(out, connector.TagDef{Name: s.Name, DataType: dt, Unit: s.Unit, Low: s.Low, High: s.High,
			Description: s.Kind + " signal", Deadband: uns.Deadband{Abs: s.Deadband}})
	}
	return out
}

// At returns the readings at t; the stateful kinds (counter, random walk,
// step) advance one step per call.
func (g *Signals) At(t time.Time) []connector.Reading {
	if g.start.IsZero() {
		g.start = t
	}
	el := t.Sub(g.start).Seconds()
	rs := make([]connector.Reading, 0, len(g.s.Signals))
	for i, s := range g.s.Signals {
		span := s.High - s.Low
		var v float64
		switch s.Kind {
		case SignalSine:
			v = s.Low + span/2*(1+math.Sin(2*math.Pi*el/s.Period.Seconds()))
		case SignalRamp:
			v = s.Low + span*math.Mod(el, s.Period.Seconds())/s.Period.Seconds()
		case SignalSquare:
			v = s.Low
			if math.Mod(el, s.Period.Seconds()) >= s.Period.Seconds()/2 {
				v = s.High
			}
		case SignalCounter:
			v = g.state[i]
			g.state[i] += s.Step
		case SignalRandomWalk:
			g.state[i] = math.Max(s.Low, math.Min(s.High, g.state[i]+(g.rng.Float64()*2-1)*s.Step))
			v = g.state[i]
		case SignalStep:
			if g.lastT[i].IsZero() || t.Sub(g.lastT[i]) >= s.Period {
				g.lastT[i] = t
				g.state[i] = math.Max(s.Low, math.Min(s.High, g.state[i]+math.Round((g.rng.Float64()*2-1))*s.Step))
			}
			v = g.state[i]
		}
		if s.Noise > 0 {
			v += g.rng.NormFloat64() * s.Noise
		}
		val := uns.Float(v)
		if s.Kind == SignalCounter && s.Noise == 0 && s.Step == math.Trunc(s.Step) {
			val = uns.Int(int64(v))
		}
		rs = append(rs, connector.Reading{Tag: s.Name, TS: t, Value: val})
	}
	return rs
}

// Run reads the signals every interval.
func (g *Signals) Run(ctx context.Context, sink connector.Sink) error {
	tick := time.NewTicker(g.s.Interval)
	defer tick.Stop()
	sink.Emit(g.At(time.Now()))
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			sink.Emit(g.At(time.Now())) // the time of the read, not of the tick
		}
	}
}
