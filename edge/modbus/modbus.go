// Package modbus is the Modbus TCP (and RTU over TCP) connector: it reads
// holding and input registers, coils and discrete inputs in block reads
// planned from the tags' addresses, decodes them with the tags' types and
// byte orders, scales them to engineering units, and writes holding
// registers and coils.
package modbus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	mb "github.com/simonvetter/modbus"

	"github.com/calx-iiot/calx/connector"
	"github.com/calx-iiot/calx/uns"
)

// Settings of a Modbus device.
type Settings struct {
	// URL is tcp://host:port or rtuovertcp://host:port.
	URL      string        `yaml:"url"`
	UnitID   uint8         `yaml:"unit_id"`
	Timeout  time.Duration `yaml:"timeout"`
	Interval time.Duration `yaml:"interval"`
	// MaxBlock is the most registers one read asks for (default 100, at most 125).
	MaxBlock int `yaml:"max_block"`
	// MaxGap is the most unused registers a read may span to cover two tags (default 10).
	MaxGap int    `yaml:"max_gap"`
	Tags   []*Tag `yaml:"tags"`
}

// Tag is one value of the device.
type Tag struct {
	Name    string `yaml:"name"`
	Area    string `yaml:"area"`    // holding, input, coil, discrete
	Address uint16 `yaml:"address"` // zero-based
	// Type: int16, uint16, int32, uint32, int64, uint64, float32, float64,
	// bool (register not zero), bit (Bit of the register), string (Length registers).
	Type      string `yaml:"type"`
	Bit       uint   `yaml:"bit"`
	Length    int    `yaml:"length"`
	ByteOrder string `yaml:"byte_order"` // big (default) or little: the bytes in each register
	WordOrder string `yaml:"word_order"` // big (default) or little: the registers of a 32/64-bit value
	// Unit, scaling, report by exception, writable.
	connector.TagOptions `yaml:",inline"`

	every time.Duration // sampling interval: the tag's, or the device's

	// Isolation (isolate.go): a tag the device refuses is read alone,
	// backing off, until it answers; a tag that answers alone but not in
	// its block is read in smaller blocks (split 1: no gaps; 2: alone).
	bad     error
	backoff time.Duration
	split   int
}

func (s *Settings) defaults() {
	if s.UnitID == 0 {
		s.UnitID = 1
	}
	if s.Timeout == 0 {
		s.Timeout = 2 * time.Second
	}
	if s.Interval == 0 {
		s.Interval = time.Second
	}
	if s.MaxBlock == 0 {
		s.MaxBlock = 100
	}
	if s.MaxGap == 0 {
		s.MaxGap = 10
	}
	for _, t := range s.Tags {
		if t.Area == "" {
			t.Area = AreaHolding
		}
		if t.Type == "" {
			t.Type = "uint16"
			if t.Area == AreaCoil || t.Area == AreaDiscrete {
				t.Type = "bool"
			}
		}
		if t.Scale == 0 {
			t.Scale = 1
		}
	}
}

// Validate checks the settings after defaults.
func (s *Settings) Validate() error {
	var errs []error
	if !strings.HasPrefix(s.URL, "tcp://") && !strings.HasPrefix(s.URL, "rtuovertcp://") {
		errs = append(errs, fmt.Errorf("url %q: want tcp://host:port or rtuovertcp://host:port", s.URL))
	}
	if s.MaxBlock < 1 || s.MaxBlock > 125 {
		errs = append(errs, fmt.Errorf("max_block %d: from 1 to 125 registers", s.MaxBlock))
	}
	if s.Interval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("interval %s: at least 10ms", s.Interval))
	}
	if len(s.Tags) == 0 {
		errs = append(errs, errors.New("tags: at least one"))
	}
	seen := map[string]bool{}
	for i, t := range s.Tags {
		at := fmt.Sprintf("tags[%d] (%s)", i, t.Name)
		if err := uns.Path(t.Name).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s name: %w", at, err))
		}
		if err := t.Check(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", at, err))
		}
		if seen[t.Name] {
			errs = append(errs, fmt.Errorf("%s: name used twice", at))
		}
		seen[t.Name] = true
		switch t.Area {
		case AreaHolding, AreaInput:
			switch t.Type {
			case "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bool":
			case "bit":
				if t.Bit > 15 {
					errs = append(errs, fmt.Errorf("%s bit %d: from 0 to 15", at, t.Bit))
				}
			case "string":
				if t.Length < 1 || t.Length > 125 {
					errs = append(errs, fmt.Errorf("%s length %d: from 1 to 125 registers", at, t.Length))
				}
			default:
				errs = append(errs, fmt.Errorf("%s type %q: want int16, uint16, int32, uint32, int64, uint64, float32, float64, bool, bit or string", at, t.Type))
			}
		case AreaCoil, AreaDiscrete:
			if t.Type != "bool" {
				errs = append(errs, fmt.Errorf("%s type %q: coils and discrete inputs are bool", at, t.Type))
			}
		default:
			errs = append(errs, fmt.Errorf("%s area %q: want holding, input, coil or discrete", at, t.Area))
		}
		for k, v := range map[string]string{"byte_order": t.ByteOrder, "word_order": t.WordOrder} {
			if v != "" && v != "big" && v != "little" {
				errs = append(errs, fmt.Errorf("%s %s %q: want big or little", at, k, v))
			}
		}
		if t.Writable && (t.Area == AreaInput || t.Area == AreaDiscrete || t.Type == "string" || t.Type == "bit") {
			errs = append(errs, fmt.Errorf("%s: %s %s cannot be written", at, t.Area, t.Type))
		}
		if int(t.Address)+t.size() > 65536 {
			errs = append(errs, fmt.Errorf("%s address %d: past the end of the address space", at, t.Address))
		}
	}
	return errors.Join(errs...)
}

func init() {
	connector.RegisterSettings("modbus", nil, New)
}

// Stats are a connection's figures.
type Stats struct {
	Connected bool
	LastError string
	Reads     uint64 // read requests
	Errors    uint64
	Latency   time.Duration // of the last read cycle
}

// Device is the Modbus connector of one device.
type Device struct {
	s      Settings
	device string
	log    *slog.Logger
	blocks []*block
	tick   time.Duration // the shortest sampling interval
	byName map[string]*Tag

	mu     sync.Mutex // the client: reads and writes take turns
	client *mb.ModbusClient
	stats  Stats
}

var (
	_ connector.Connector = (*Device)(nil)
	_ connector.Writer    = (*Device)(nil)
)

// New returns the connector of a device.
func New(device string, s Settings, log *slog.Logger) (*Device, error) {
	s.defaults()
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("modbus %s: %w", device, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Device{s: s, device: device, log: log.With("component", "modbus", "device", device), byName: map[string]*Tag{}}
	d.tick = s.Interval
	for _, t := range s.Tags {
		d.byName[t.Name] = t
		t.every = cmp.Or(t.Interval, s.Interval)
		d.tick = min(d.tick, t.every)
	}
	d.replan(time.Now())
	return d, nil
}

// Blocks is how many read requests it takes to read every tag once.
func (d *Device) Blocks() int { return len(d.blocks) }

// Stats returns the connection's figures.
func (d *Device) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// Tags declares the device's tags.
func (d *Device) Tags() []connector.TagDef {
	var out []connector.TagDef
	for _, t := range d.s.Tags {
		dt := uns.TypeFloat64
		switch {
		case t.Type == "bool" || t.Type == "bit":
			dt = uns.TypeBool
		case t.Type == "string":
			dt = uns.TypeString
		case !t.Scaled() && strings.Contains(t.Type, "int"):
			dt = uns.TypeInt64
		}
		def := t.Def(t.Name, dt)
		if lo, hi, ok := t.rawRange(); ok && t.Writable && t.Area == AreaHolding {
			a, _ := t.ToEng(uns.Float(lo)).AsFloat()
			b, _ := t.ToEng(uns.Float(hi)).AsFloat()
			def.Narrow(min(a, b), max(a, b))
		}
		out = append(out, def)
	}
	return out
}

// Run reads every block each interval; a lost connection makes the device
// lost until a reconnect, tried with capped exponential backoff and jitter.
func (d *Device) Run(ctx context.Context, sink connector.Sink) error {
	backoff := time.Duration(0)
	tick := time.NewTicker(d.tick)
	defer tick.Stop()
	defer d.close()
	for {
		if err := d.cycle(ctx, sink); err != nil {
			sink.Lost(err)
			d.close()
			backoff = min(max(2*backoff, 500*time.Millisecond), 30*time.Second)
			wait := backoff/2 + rand.N(backoff/2+1)
			d.log.Warn("device unreachable", "err", err, "retry_in", wait.Round(time.Millisecond))
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			continue
		}
		backoff = 0
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (d *Device) connect() error {
	if d.client != nil {
		return nil
	}
	c, err := mb.NewClient(&mb.ClientConfiguration{URL: d.s.URL, Timeout: d.s.Timeout})
	if err != nil {
		return fmt.Errorf("modbus %s: %w", d.s.URL, err)
	}
	if err := c.Open(); err != nil {
		return fmt.Errorf("modbus %s: %w", d.s.URL, err)
	}
	if err := c.SetUnitId(d.s.UnitID); err != nil {
		c.Close()
		return fmt.Errorf("modbus %s: %w", d.s.URL, err)
	}
	d.client = c
	d.stats.Connected = true
	return nil
}

func (d *Device) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.client != nil {
		d.client.Close()
		d.client = nil
	}
	d.stats.Connected = false
}

// isDeviceError tells a refusal of one request (an exception from the
// device) from a lost connection.
func isDeviceError(err error) bool {
	var e mb.Error
	return errors.As(err, &e) && e != mb.ErrRequestTimedOut && e != mb.ErrBadTransactionId && e != mb.ErrProtocolError
}

// isRefusal tells an exception that says the request itself is wrong for
// the device (an address it does not map, a function or quantity it does
// not take), which isolation answers, from one that passes (busy, a
// gateway's path, a bad frame), after which the same request may succeed.
func isRefusal(err error) bool {
	var e mb.Error
	return errors.As(err, &e) && (e == mb.ErrIllegalDataAddress || e == mb.ErrIllegalFunction || e == mb.ErrIllegalDataValue)
}

// cycle reads every block that is due and emits the values. An error
// return means the connection is lost; a device's refusal of an address
// marks those tags BAD and the others go on. It stops early, with no
// error, when ctx ends.
func (d *Device) cycle(ctx context.Context, sink connector.Sink) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.connect(); err != nil {
		d.stats.LastError = err.Error()
		d.stats.Errors++
		return err
	}
	start := time.Now()
	var rs []connector.Reading
	read, replan := false, false
	for _, b := range d.blocks {
		if ctx.Err() != nil {
			break
		}
		// Due within half a tick: the ticker's jitter must not skip a read.
		if start.Add(d.tick / 2).Before(b.due) {
			continue
		}
		b.due = start.Add(b.every)
		read = true
		regs, bits, err := d.read(b.area, b.start, b.count)
		now := time.Now()
		if err != nil && !isDeviceError(err) {
			d.stats.LastError = err.Error()
			d.stats.Errors++
			return fmt.Errorf("modbus %s: %w", d.s.URL, err)
		}
		if err != nil && !isRefusal(err) {
			// It may pass: the block's tags are BAD for this cycle, and
			// the same read goes again at the next.
			d.stats.LastError = err.Error()
			d.stats.Errors++
			for _, t := range b.tags {
				rs = append(rs, connector.Reading{Tag: t.Name, TS: now, Value: uns.Null, Quality: uns.Bad})
			}
			continue
		}
		if err != nil {
			var changed bool
			rs, changed = d.isolate(b, err, rs, now)
			replan = replan || changed
			continue
		}
		for _, t := range b.tags {
			if t.bad != nil {
				d.log.Info("tag answers again", "tag", t.Name, "area", t.Area, "address", t.Address)
				t.bad, t.backoff, replan = nil, 0, true
			}
			rs = append(rs, d.reading(t, regs, bits, int(t.Address-b.start), now))
		}
	}
	if replan {
		d.replan(time.Now())
	}
	if !read {
		return nil
	}
	d.stats.Latency = time.Since(start)
	sink.Emit(rs)
	return nil
}

func (d *Device) read(area string, start, count uint16) ([]uint16, []bool, error) {
	d.stats.Reads++
	switch area {
	case AreaHolding:
		r, err := d.client.ReadRegisters(start, count, mb.HOLDING_REGISTER)
		return r, nil, err
	case AreaInput:
		r, err := d.client.ReadRegisters(start, count, mb.INPUT_REGISTER)
		return r, nil, err
	case AreaCoil:
		b, err := d.client.ReadCoils(start, count)
		return nil, b, err
	default:
		b, err := d.client.ReadDiscreteInputs(start, count)
		return nil, b, err
	}
}

func (d *Device) reading(t *Tag, regs []uint16, bits []bool, off int, now time.Time) connector.Reading {
	if bits != nil {
		return connector.Reading{Tag: t.Name, TS: now, Value: uns.Bool(bits[off])}
	}
	v, err := t.decode(regs[off : off+t.size()])
	if err != nil {
		return connector.Reading{Tag: t.Name, TS: now, Value: uns.Null, Quality: uns.Bad}
	}
	return connector.Reading{Tag: t.Name, TS: now, Value: t.ToEng(v)}
}

// Write sets a writable holding register tag or coil.
func (d *Device) Write(_ context.Context, tag string, v uns.Value) error {
	t, ok := d.byName[tag]
	if !ok || !t.Writable {
		return fmt.Errorf("modbus %s: tag %q is not writable", d.device, tag)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.connect(); err != nil {
		return err
	}
	if t.Area == AreaCoil {
		f, _ := v.AsFloat()
		return d.client.WriteCoil(t.Address, f != 0)
	}
	regs, err := t.encode(t.ToRaw(v))
	if err != nil {
		return fmt.Errorf("modbus %s: tag %s: %w", d.device, tag, err)
	}
	if err := d.client.WriteRegisters(t.Address, regs); err != nil {
		return fmt.Errorf("modbus %s: tag %s: %w", d.device, tag, err)
	}
	return nil
}

// Latency is how long the last read cycle took.
func (d *Device) Latency() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats.Latency
}
