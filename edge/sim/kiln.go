// Package sim is a connector that simulates a lime kiln: it warms up, runs in
// regenerative cycles, trips now and then and restarts, and reports the
// process and emissions values such a kiln's PLC would. It exists so that a
// newcomer sees plausible plant data without a plant, and so that tests have
// a device whose values are known.
package sim

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/calx-iiot/calx/connector"
	"github.com/calx-iiot/calx/uns"
)

// Settings of a simulated kiln.
type Settings struct {
	// Interval between reads.
	Interval time.Duration `yaml:"interval"`
	// CycleTime is the length of one regenerative burning cycle.
	CycleTime time.Duration `yaml:"cycle_time"`
	// WarmupTime is roughly how long a cold kiln takes to reach its burning temperature.
	WarmupTime time.Duration `yaml:"warmup_time"`
	// MeanTimeBetweenTrips is the mean running time before a trip; 0 means never.
	MeanTimeBetweenTrips time.Duration `yaml:"mean_time_between_trips"`
	// TripTime is how long a tripped kiln stays down.
	TripTime time.Duration `yaml:"trip_time"`
	// Seed makes the noise repeatable; 0 derives it from the device name.
	Seed uint64 `yaml:"seed"`
	// StartHot starts the kiln in the running state instead of cold.
	StartHot bool `yaml:"start_hot"`
}

// Defaults are chosen so that a demo shows every state within minutes.
func (s *Settings) defaults() {
	if s.Interval == 0 {
		s.Interval = time.Second
	}
	if s.CycleTime == 0 {
		s.CycleTime = time.Minute
	}
	if s.WarmupTime == 0 {
		s.WarmupTime = 2 * time.Minute
	}
	if s.TripTime == 0 {
		s.TripTime = 45 * time.Second
	}
}

// Validate checks the settings after defaults.
func (s *Settings) Validate() error {
	switch {
	case s.Interval < time.Millisecond:
		return fmt.Errorf("interval %s: must be at least 1ms", s.Interval)
	case s.CycleTime < s.Interval:
		return fmt.Errorf("cycle_time %s: must be at least the interval", s.CycleTime)
	case s.MeanTimeBetweenTrips < 0:
		return fmt.Errorf("mean_time_between_trips %s: must not be negative", s.MeanTimeBetweenTrips)
	}
	return nil
}

func init() {
	connector.RegisterSettings("sim", func() Settings { return Settings{MeanTimeBetweenTrips: 10 * time.Minute} }, quiet(New))
}

// Kiln states, as reported by the state tag.
const (
	StateWarmup  = "warmup"
	StateRunning = "running"
	StateTripped = "tripped"
)

// Tag names of a simulated kiln.
const (
	TagTemp       = "burning_zone_temp"
	TagFuel       = "fuel_flow"
	TagPower      = "drive_power"
	TagO2         = "o2"
	TagCO         = "co"
	TagNOx        = "nox"
	TagDust       = "dust"
	TagProduction = "production_rate"
	TagRunning    = "running"
	TagState      = "state"
	TagCycles     = "cycle_count"
	TagLife       = "plc_life_counter"
	TagSetpoint   = "production_setpoint"
)

// Kiln is the simulated kiln connector.
type Kiln struct {
	mu       sync.Mutex // Step (the read loop) against Write (commands)
	setpoint float64
	s        Settings
	device   string
	rng      *rand.Rand

	state     string
	stateAt   time.Time
	temp      float64
	o2        float64
	cycles    int64
	life      int64
	phase     float64
	dustSpike float64
}

var (
	_ connector.Connector = (*Kiln)(nil)
	_ connector.Writer    = (*Kiln)(nil)
)

// New returns a simulated kiln for device.
// quiet adapts a simulator's constructor to the connector registry: the
// simulators have nothing to log.
func quiet[S any, C connector.Connector](f func(string, S) (C, error)) func(string, S, *slog.Logger) (C, error) {
	return func(device string, s S, _ *slog.Logger) (C, error) { return f(device, s) }
}

func New(device string, s Settings) (*Kiln, error) {
	s.defaults()
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("sim %s: %w", device, err)
	}
	seed := s.Seed
	if seed == 0 {
		h := fnv.New64a()
		h.Write([]byte(device))
		seed = h.Sum64()
	}
	k := &Kiln{s: s, device: device, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		state: StateWarmup, temp: 20, o2: 20.9, setpoint: 18}
	if s.StartHot {
		k.state, k.temp, k.o2 = StateRunning, 1100, 2.5
	}
	return k, nil
}

// Tags lists what the kiln reports.
func (k *Kiln) Tags() []connector.TagDef {
	db := func(abs float64) uns.Deadband { return uns.Deadband{Abs: abs, Heartbeat: 30 * time.Second} }
	return []connector.TagDef{
		{Name: TagTemp, DataType: uns.TypeFloat64, Unit: "°C", Low: 0, High: 1400, Description: "Burning zone temperature", Deadband: db(0.5)},
		{Name: TagFuel, DataType: uns.TypeFloat64, Unit: "Nm³/h", Low: 0, High: 1500, Description: "Natural gas flow to the burners", Deadband: db(2)},
		{Name: TagPower, DataType: uns.TypeFloat64, Unit: "kW", Low: 0, High: 500, Description: "Kiln drive and fan power", Deadband: db(1)},
		{Name: TagO2, DataType: uns.TypeFloat64, Unit: "%", Low: 0, High: 21, Description: "Oxygen in the flue gas", Deadband: db(0.05)},
		{Name: TagCO, DataType: uns.TypeFloat64, Unit: "mg/Nm³", Low: 0, High: 5000, Description: "Carbon monoxide emission", Deadband: db(5)},
		{Name: TagNOx, DataType: uns.TypeFloat64, Unit: "mg/Nm³", Low: 0, High: 1000, Description: "Nitrogen oxides emission", Deadband: db(2)},
		{Name: TagDust, DataType: uns.TypeFloat64, Unit: "mg/Nm³", Low: 0, High: 50, Description: "Dust emission after the filter", Deadband: db(0.2)},
		{Name: TagProduction, DataType: uns.TypeFloat64, Unit: "t/h", Low: 0, High: 30, Description: "Quicklime production rate", Deadband: db(0.1)},
		{Name: TagRunning, DataType: uns.TypeBool, Description: "Kiln in production"},
		{Name: TagState, DataType: uns.TypeString, Description: "Kiln state: warmup, running or tripped"},
		{Name: TagCycles, DataType: uns.TypeInt64, Description: "Burning cycles completed"},
		{Name: TagLife, DataType: uns.TypeInt64, Description: "PLC life counter, one step per read"},
		{Name: TagSetpoint, DataType: uns.TypeFloat64, Unit: "t/h", Low: 0, High: 30, Writable: true,
			Description: "Production rate setpoint (writable)", Deadband: db(0.01), WriteMin: &setpointMin, WriteMax: &setpointMax},
	}
}

// The setpoint's writable range, t/h.
var setpointMin, setpointMax = 0.0, 30.0

// Write sets the production setpoint, the kiln's one writable tag.
func (k *Kiln) Write(_ context.Context, tag string, v uns.Value) error {
	if tag != TagSetpoint {
		return fmt.Errorf("sim %s: tag %q is read-only", k.device, tag)
	}
	f, ok := v.AsFloat()
	if !ok || f < 0 || f > 30 {
		return fmt.Errorf("sim %s: setpoint %v: want a number from 0 to 30 t/h", k.device, v.Any())
	}
	k.mu.Lock()
	k.setpoint = f
	k.mu.Unlock()
	return nil
}

// Run steps the model once per interval and emits every tag.
func (k *Kiln) Run(ctx context.Context, sink connector.Sink) error {
	emit := sink.Emit
	t := time.NewTicker(k.s.Interval)
	defer t.Stop()
	now := time.Now()
	k.stateAt = now
	emit(k.Step(now, 0))
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			// The time of the read, not of the tick: a tick can wait in its
			// channel, and a value must not look older than it is.
			at := time.Now()
			dt := at.Sub(now).Seconds()
			now = at
			emit(k.Step(now, dt))
		}
	}
}

func (k *Kiln) noise(sd float64) float64 { return k.rng.NormFloat64() * sd }

// Step advances the model by dt seconds and returns the readings at now.
// It is exported so that tests and benchmarks can drive the model without
// waiting for the clock.
func (k *Kiln) Step(now time.Time, dt float64) []connector.Reading {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.life++
	if k.stateAt.IsZero() {
		k.stateAt = now
	}
	in := now.Sub(k.stateAt)
	warmTau := k.s.WarmupTime.Seconds() / 3
	switch k.state {
	case StateWarmup:
		k.temp += (1150 - k.temp) * math.Min(1, dt/warmTau)
		k.o2 += (6 - k.o2) * math.Min(1, dt/20)
		if k.temp >= 1050 {
			k.state, k.stateAt, k.phase = StateRunning, now, 0
		}
	case StateRunning:
		k.phase += dt / k.s.CycleTime.Seconds()
		for k.phase >= 1 {
			k.phase--
			k.cycles++
		}
		target := 1100 + 35*math.Sin(2*math.Pi*k.phase)
		k.temp += (target - k.temp) * math.Min(1, dt/5)
		o2target := 2.6 + 0.7*math.Sin(2*math.Pi*k.phase+1)
		k.o2 += (o2target - k.o2) * math.Min(1, dt/4)
		if mtbt := k.s.MeanTimeBetweenTrips.Seconds(); mtbt > 0 && k.rng.Float64() < dt/mtbt {
			k.state, k.stateAt = StateTripped, now
		}
	case StateTripped:
		k.temp += (20 - k.temp) * math.Min(1, dt/900)
		k.o2 += (20.9 - k.o2) * math.Min(1, dt/30)
		if in >= k.s.TripTime {
			k.state, k.stateAt = StateWarmup, now
		}
	}
	running := k.state == StateRunning
	var fuel, power, prod float64
	switch k.state {
	case StateWarmup:
		fuel, power = 650+k.noise(15), 120+k.noise(4)
	case StateRunning:
		fuel = 900 + 70*math.Sin(2*math.Pi*k.phase+0.4) + k.noise(8)
		power = 245 + 12*math.Sin(2*math.Pi*k.phase) + k.noise(3)
		prod = k.setpoint + k.noise(0.3)
	}
	o2 := clamp(k.o2+k.noise(0.08), 0, 20.9)
	co := 0.0
	if fuel > 0 {
		co = clamp(140+900*math.Max(0, 2.2-o2)+k.noise(12), 0, 5000)
	}
	nox := 0.0
	if k.temp > 600 && fuel > 0 {
		nox = clamp(320+0.9*(k.temp-1080)+k.noise(6), 0, 1000)
	}
	if k.rng.Float64() < 0.002 {
		k.dustSpike = 15 + k.rng.Float64()*15
	}
	k.dustSpike *= 0.9
	dust := 0.5
	if fuel > 0 {
		dust = clamp(4+k.dustSpike+k.noise(0.3), 0, 50)
	}
	temp := k.temp + k.noise(2)
	return []connector.Reading{
		{Tag: TagTemp, TS: now, Value: uns.Float(round(temp, 1))},
		{Tag: TagFuel, TS: now, Value: uns.Float(round(math.Max(0, fuel), 1))},
		{Tag: TagPower, TS: now, Value: uns.Float(round(math.Max(0, power), 1))},
		{Tag: TagO2, TS: now, Value: uns.Float(round(o2, 2))},
		{Tag: TagCO, TS: now, Value: uns.Float(round(co, 1))},
		{Tag: TagNOx, TS: now, Value: uns.Float(round(nox, 1))},
		{Tag: TagDust, TS: now, Value: uns.Float(round(dust, 2))},
		{Tag: TagProduction, TS: now, Value: uns.Float(round(math.Max(0, prod), 2))},
		{Tag: TagRunning, TS: now, Value: uns.Bool(running)},
		{Tag: TagState, TS: now, Value: uns.String(k.state)},
		{Tag: TagCycles, TS: now, Value: uns.Int(k.cycles)},
		{Tag: TagLife, TS: now, Value: uns.Int(k.life)},
		{Tag: TagSetpoint, TS: now, Value: uns.Float(k.setpoint)},
	}
}

func clamp(v, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, v)) }

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}
