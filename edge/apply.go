package edge

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/calx-iiot/calx/config"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
)

// RemoteConfig is a configuration the cloud gives an edge: a version of the
// fleet config and the edge's devices with templates expanded. The edge
// keeps the last one it applied in its data dir and runs it on start, with
// or without the cloud.
type RemoteConfig struct {
	Version uint64         `yaml:"version"`
	Devices []DeviceConfig `yaml:"devices"`
}

// ConfigStatus is what the edge reports of its configuration (the wire
// contract is sparkplug.ConfigStatus).
type ConfigStatus = sparkplug.ConfigStatus

func appliedFile(dataDir string) string { return filepath.Join(dataDir, "config", "applied.yaml") }

// LoadApplied returns the configuration last applied in dataDir, or nil.
func LoadApplied(dataDir string) (*RemoteConfig, error) {
	file := appliedFile(dataDir)
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("edge: applied config: %w", err)
	}
	var rc RemoteConfig
	if err := config.Decode(file, b, &rc); err != nil {
		return nil, err
	}
	return &rc, nil
}

func saveApplied(dataDir string, raw []byte) error {
	file := appliedFile(dataDir)
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fmt.Errorf("edge: applied config: %w", err)
	}
	if err := os.WriteFile(file+".tmp", raw, 0o600); err != nil {
		return fmt.Errorf("edge: applied config: %w", err)
	}
	if err := os.Rename(file+".tmp", file); err != nil {
		return fmt.Errorf("edge: applied config: %w", err)
	}
	return nil
}

// ConfigStatus returns what the edge runs and what it last refused.
func (e *Edge) ConfigStatus() ConfigStatus {
	e.cfgMu.Lock()
	defer e.cfgMu.Unlock()
	return e.cfg
}

// applyRemote validates and applies a configuration from the cloud; raw is
// its YAML, kept on disk once applied. A configuration that fails is
// refused as a whole, and the edge keeps running what it ran.
func (e *Edge) applyRemote(raw []byte) {
	var rc RemoteConfig
	err := config.Decode("config from the cloud", raw, &rc)
	e.cfgMu.Lock()
	cur := e.cfg
	e.cfgMu.Unlock()
	if err == nil && (rc.Version == cur.Applied || rc.Version == cur.Refused) {
		return // seen already
	}
	if err == nil {
		var devs []Device
		if devs, err = BuildDevices(fmt.Sprintf("config version %d", rc.Version), "devices", rc.Devices, e.opts.Logger.With("edge", e.opts.EdgeID)); err == nil {
			err = e.Apply(devs)
		}
	}
	if err == nil {
		err = saveApplied(e.opts.DataDir, raw)
	}
	e.cfgMu.Lock()
	if err != nil {
		e.cfg.Refused, e.cfg.Error = rc.Version, err.Error()
		e.log.Error("config refused; running the previous one", "version", rc.Version, "running", e.cfg.Applied, "err", err)
	} else {
		e.cfg = ConfigStatus{Applied: rc.Version}
		e.log.Info("config applied", "version", rc.Version, "devices", len(rc.Devices))
	}
	e.cfg.At = time.Now()
	e.cfgMu.Unlock()
}

// deviceList is the devices, retired ones included, in order.
func (e *Edge) deviceList() []*device {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*device(nil), e.devices...)
}

// startDevice runs a device's connector until the edge stops or the device
// is stopped.
func (e *Edge) startDevice(d *device) {
	ctx, cancel := context.WithCancel(e.runCtx)
	d.stop, d.done = cancel, make(chan struct{})
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer close(d.done)
		if err := d.Connector.Run(ctx, deviceSink{e, d}); err != nil {
			e.log.Error("connector stopped", "device", d.ID, "err", err)
		}
	}()
}

// Apply changes the running devices to devs: devices whose config is
// unchanged keep running without a gap, changed ones restart with their
// new connector, new ones start, and removed ones stop and are announced
// dead; with new devices the node is born again. Nothing changes when devs
// are not valid.
//
// Metrics a device had before a change stay in its births until the edge
// restarts, and a removed device stays known (dead), so that values of
// them still in the buffer go out.
func (e *Edge) Apply(devs []Device) error {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	var errs []error
	ids := map[string]bool{}
	for _, d := range devs {
		if err := uns.ValidateSegment(d.ID); err != nil {
			errs = append(errs, fmt.Errorf("device id %q: %w", d.ID, err))
		}
		if ids[d.ID] {
			errs = append(errs, fmt.Errorf("device %s: listed twice", d.ID))
		}
		ids[d.ID] = true
		if err := d.Path.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("device %s path: %w", d.ID, err))
		}
		names := map[string]bool{}
		for _, td := range d.Connector.Tags() {
			if names[td.Name] {
				errs = append(errs, fmt.Errorf("device %s: tag %q declared twice", d.ID, td.Name))
			}
			names[td.Name] = true
			if err := (d.Path + "/" + uns.Path(td.Name)).Validate(); err != nil {
				errs = append(errs, fmt.Errorf("device %s tag %q: %w", d.ID, td.Name, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	e.mu.Lock()
	current := map[string]*device{}
	for _, d := range e.devices {
		if !d.retired {
			current[d.ID] = d
		}
	}
	var changed, added []Device
	var stop []*device
	for _, nd := range devs {
		d := current[nd.ID]
		delete(current, nd.ID)
		switch {
		case d != nil && nd.Spec != "" && d.Spec == nd.Spec && d.Path == nd.Path:
		case d != nil:
			changed = append(changed, nd)
			stop = append(stop, d)
		default:
			added = append(added, nd)
		}
	}
	for _, d := range current {
		stop = append(stop, d) // removed
	}
	e.mu.Unlock()
	if len(changed)+len(added)+len(stop) == 0 {
		return nil
	}
	// Outside the lock: a connector may be waiting for it in Emit.
	for _, d := range stop {
		if d.stop != nil {
			d.stop()
			<-d.done
		}
	}

	now := time.Now()
	e.mu.Lock()
	var run []*device
	for _, d := range current {
		d.retired = true
		if !d.lost {
			d.lost = true
			e.events = append(e.events, event{ev: evDeath, dev: d, at: now})
		}
	}
	byID := map[string]*device{}
	for _, d := range e.devices {
		byID[d.ID] = d
	}
	for _, nd := range changed {
		d := byID[nd.ID]
		d.Device = nd
		for _, td := range nd.Connector.Tags() {
			if m := d.byName[td.Name]; m != nil {
				m.def, m.path = td, nd.Path+"/"+uns.Path(td.Name)
				m.filter = newFilter(td)
				e.byPath[m.path] = m
				continue
			}
			if err := e.addMetric(d, td); err != nil {
				errs = append(errs, err) // checked above; cannot happen
			}
		}
		d.gen++
		if !d.lost {
			e.events = append(e.events, event{ev: evBirth, dev: d, at: now})
		}
		run = append(run, d)
	}
	for _, nd := range added {
		d := &device{Device: nd, byName: map[string]*metric{}, byAlias: map[uint64]*metric{}}
		for _, td := range nd.Connector.Tags() {
			if err := e.addMetric(d, td); err != nil {
				errs = append(errs, err)
			}
		}
		d.connAlias = e.alias + 1
		e.alias += connMetrics
		e.alias++
		d.instAlias = e.alias
		d.rate.rates(now, 0, 0)
		e.devices = append(e.devices, d)
		run = append(run, d)
	}
	e.mu.Unlock()
	for _, d := range run {
		e.startDevice(d)
	}
	e.log.Info("devices changed", "changed", len(changed), "added", len(added), "removed", len(current))
	// New devices bring node metrics of their connections: the node is born
	// again with them. Changed and removed ones had their DBIRTH or DDEATH
	// queued.
	if e.node != nil && len(added) > 0 {
		e.node.born.Store(false)
	}
	e.signal()
	return errors.Join(errs...)
}
