// Package connector is the contract between Calx's connectors and what
// runs them: what a connector declares (TagDef, TagOptions), reads
// (Reading) and hands over (Sink), the registry of connector kinds, and
// the device configs they are built from (DeviceConfig, BuildDevices).
// The edge runtime and the fleet model both use it; it knows nothing of
// either, nor of Sparkplug.
package connector

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// TagDef declares one tag a connector provides.
type TagDef struct {
	Name        string // metric name on the device; the last segments of its UNS path
	DataType    uns.DataType
	Unit        string
	Low, High   float64 // engineering range; span of the percent deadband
	Description string
	Writable    bool
	Deadband    uns.Deadband
	// Alarm limits in engineering units, nil when not set; they go into
	// the birth as metric properties for the cloud's alarms.
	AlarmLow, AlarmHigh *float64
	// WriteMin and WriteMax bound a write, in engineering units: what the
	// device's type takes through the tag's scaling, narrowed by the tag's
	// write_min and write_max; nil where there is no bound. The edge
	// refuses a write outside them, and the birth tells the cloud.
	WriteMin, WriteMax *float64
}

// Narrow bounds d's writes to lo..hi as well (the range a device's type
// takes, in engineering units).
func (d *TagDef) Narrow(lo, hi float64) {
	if d.WriteMin == nil || *d.WriteMin < lo {
		d.WriteMin = &lo
	}
	if d.WriteMax == nil || *d.WriteMax > hi {
		d.WriteMax = &hi
	}
}

// Reading is one value read from a device.
type Reading struct {
	Tag     string
	TS      time.Time // taken at the read, or given by the source
	Value   uns.Value
	Quality uns.Quality
}

// Sink receives what a connector reads. Its methods do not block on the
// network and do not keep the slice.
type Sink interface {
	// Emit hands over the values of one read.
	Emit([]Reading)
	// Lost reports that the device cannot be reached: its tags go BAD and
	// the device is announced dead (DDEATH) until the next Emit.
	Lost(err error)
}

// Declarer is implemented by the Sink a connector is given. A connector
// that learns tags while it runs (MQTT topics matched by a wildcard)
// declares them before it emits their values; the device is then born
// again on the wire with them, and they are kept in the data dir so that
// values buffered for them survive a restart. Declaring a known tag again
// changes nothing.
type Declarer interface {
	Declare(defs []TagDef) error
}

// LocalBrokerSink is implemented by the Sink a connector is given: the
// address (tcp://host:port) of the edge's own broker, "" when it runs none,
// and the account to use there ("" when it asks for none).
type LocalBrokerSink interface {
	LocalBroker() (url, username, password string)
}

// DirSink is implemented by the Sink a connector is given: a directory in
// the edge's data dir for the device's own files (certificates, state).
type DirSink interface {
	DeviceDir() string
}

// Connector reads one device. Run keeps reading until ctx is done, handing
// each read's values to the sink; when the device is lost it calls Lost and
// reconnects by itself. Run returns nil when ctx is cancelled.
type Connector interface {
	Tags() []TagDef
	Run(ctx context.Context, sink Sink) error
}

// Writer is implemented by connectors whose devices take writes (Sparkplug
// DCMD). Write is only called for tags declared Writable.
type Writer interface {
	Write(ctx context.Context, tag string, v uns.Value) error
}

// Factory builds a connector from its decoded settings. The settings type
// is the factory's own; config decoding hands it the YAML node. log is the
// edge's logger (nil: discard); the connector adds its kind and device.
type Factory func(device string, decode func(any) error, log *slog.Logger) (Connector, error)

var (
	regMu    sync.RWMutex
	registry = map[string]Factory{}
)

// Register makes a connector kind available to configs; called from init.
func Register(kind string, f Factory) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := registry[kind]; dup {
		panic("edge: connector " + kind + " registered twice")
	}
	registry[kind] = f
}

// Lookup returns the factory of a connector kind.
func Lookup(kind string) (Factory, error) {
	regMu.RLock()
	defer regMu.RUnlock()
	f, ok := registry[kind]
	if !ok {
		return nil, fmt.Errorf("unknown connector %q (known: %v)", kind, kinds())
	}
	return f, nil
}

func kinds() []string {
	var ks []string
	for k := range registry {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// RegisterSettings registers a connector whose settings decode from the
// YAML into S, starting from defaults (nil: the zero S), and are then built
// into a connector by build.
func RegisterSettings[S any, C Connector](kind string, defaults func() S, build func(device string, s S, log *slog.Logger) (C, error)) {
	Register(kind, func(device string, decode func(any) error, log *slog.Logger) (Connector, error) {
		var s S
		if defaults != nil {
			s = defaults()
		}
		if err := decode(&s); err != nil {
			return nil, err
		}
		c, err := build(device, s, log)
		if err != nil {
			return nil, err // not c: a nil pointer in an interface is no nil interface
		}
		return c, nil
	})
}
