// Package fleet is the central configuration of a Calx fleet: machine
// templates, the edges, and the devices on each edge as instances of a
// template. The cloud keeps it versioned and expands, for each edge, the
// device configs that edge runs (see EdgeConfig).
//
// A template declares a machine type once: its connector and the connector's
// settings, tags included, with ${param} placeholders in any string. A
// template may extend another; its settings are merged over the parent's.
// An instance (a device of an edge) names a template, a place in the UNS and
// the parameters' values, and may override any setting.
//
// Merging: mappings merge key by key; lists of mappings that all have a
// name (tags) merge by name, new names appended; anything else is replaced.
package fleet

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/calx-iiot/calx/config"
	"github.com/calx-iiot/calx/connector"
	"github.com/calx-iiot/calx/transform"
	"github.com/calx-iiot/calx/uns"
)

// Config is the whole fleet.
type Config struct {
	Templates []Template `yaml:"templates"`
	Edges     []Edge     `yaml:"edges"`
}

// Template is a machine type.
type Template struct {
	Name        string         `yaml:"name"`
	Description string         `yaml:"description"`
	Extends     string         `yaml:"extends"`
	Connector   string         `yaml:"connector"`
	Params      map[string]any `yaml:"params"` // defaults of parameters
	Settings    map[string]any `yaml:"settings"`
	// Calculated tags of the machine type, computed in the cloud from the
	// device's other tags; merged by name along extends.
	Calculated []Calculated `yaml:"calculated"`
	// Cycles of the machine type (production cycles with aggregates) and
	// its alarms, evaluated in the cloud; merged by name along extends.
	Cycles []transform.CycleDef `yaml:"cycles"`
	Alarms []transform.AlarmDef `yaml:"alarms"`
}

// Calculated is a tag the cloud computes from other tags of the same
// device: Expr (expr-lang) names them by their tag names, e.g.
// "power_kw * 1000 / max(production_tph, 0.1)", with functions of time
// such as integral(power_kw) and avg_over(co, "1h") (see transform.CalcDef).
type Calculated = transform.CalcDef

// CalculatedTag is a calculated tag of one device, placed in the UNS.
type CalculatedTag struct {
	Calculated
	Device string // the device's UNS path
}

// CalculatedTags returns every device's calculated tags, templates
// followed.
func (c *Config) CalculatedTags() []CalculatedTag {
	var out []CalculatedTag
	for _, d := range c.Transforms() {
		for _, ct := range d.Calculated {
			out = append(out, CalculatedTag{Calculated: ct, Device: d.Path})
		}
	}
	return out
}

// byTemplate collects the named items list gives of each template along a
// template's extends chain: those of what it extends first, an item of the
// same name replaced in place, new ones appended.
func byTemplate[T any](c *Config, template string, list func(*Template) []T, name func(T) string) []T {
	var chain []*Template
	for n := template; n != ""; {
		t, ok := c.Template(n)
		if !ok || slices.Contains(chain, t) {
			break
		}
		chain = append(chain, t)
		n = t.Extends
	}
	var out []T
	for _, t := range slices.Backward(chain) {
		out = byName(out, list(t), name)
	}
	return out
}

// byName lays over onto base: an item of the same name replaced in place,
// new ones appended.
func byName[T any](base, over []T, name func(T) string) []T {
	out := slices.Clone(base)
	for _, x := range over {
		if i := slices.IndexFunc(out, func(y T) bool { return name(y) == name(x) }); i >= 0 {
			out[i] = x
		} else {
			out = append(out, x)
		}
	}
	return out
}

// Transforms returns what the cloud computes for every device: calculated
// tags, cycles and alarms of its template chain, with the instance's
// alarm overrides laid over them by name.
func (c *Config) Transforms() []transform.Device {
	var out []transform.Device
	for _, e := range c.Edges {
		for _, d := range e.Devices {
			td := transform.Device{
				Path:       d.Path,
				Calculated: byTemplate(c, d.Template, func(t *Template) []transform.CalcDef { return t.Calculated }, func(x transform.CalcDef) string { return x.Name }),
				Cycles:     byTemplate(c, d.Template, func(t *Template) []transform.CycleDef { return t.Cycles }, func(x transform.CycleDef) string { return x.Name }),
				Alarms:     byTemplate(c, d.Template, func(t *Template) []transform.AlarmDef { return t.Alarms }, func(x transform.AlarmDef) string { return x.Name }),
			}
			td.Calculated = byName(td.Calculated, d.Calculated, func(x transform.CalcDef) string { return x.Name })
			td.Cycles = byName(td.Cycles, d.Cycles, func(x transform.CycleDef) string { return x.Name })
			td.Alarms, _ = overrideAlarms(td.Alarms, d.Alarms)
			if len(td.Calculated)+len(td.Cycles)+len(td.Alarms) > 0 {
				out = append(out, td)
			}
		}
	}
	return out
}

// overrideAlarms lays an instance's alarm settings over its template's,
// key by key and by name; a name the template lacks is a new alarm.
func overrideAlarms(base []transform.AlarmDef, over []map[string]any) ([]transform.AlarmDef, error) {
	out := slices.Clone(base)
	var errs []error
	for i, o := range over {
		name, _ := o["name"].(string)
		j := slices.IndexFunc(out, func(a transform.AlarmDef) bool { return a.Name == name })
		var m map[string]any
		if j >= 0 {
			b, err := yaml.Marshal(out[j])
			if err == nil {
				err = yaml.Unmarshal(b, &m)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("alarms[%d] (%s): %w", i, name, err))
				continue
			}
		}
		merged := merge(m, o)
		b, err := yaml.Marshal(merged)
		if err != nil {
			errs = append(errs, fmt.Errorf("alarms[%d] (%s): %w", i, name, err))
			continue
		}
		var a transform.AlarmDef
		if err := config.Decode(fmt.Sprintf("alarms[%d] (%s)", i, name), b, &a); err != nil {
			errs = append(errs, err)
			continue
		}
		if j >= 0 {
			out[j] = a
		} else {
			out = append(out, a)
		}
	}
	return out, errors.Join(errs...)
}

// Edge is one edge node of the fleet.
type Edge struct {
	Group   string     `yaml:"group"`
	EdgeID  string     `yaml:"edge_id"`
	Site    string     `yaml:"site"`
	Devices []Instance `yaml:"devices"`
	// MaxTags is how many tags the edge node's births may define in all;
	// zero means DefaultMaxTags.
	MaxTags int `yaml:"max_tags"`
}

// DefaultMaxTags is how many tags an edge node may define when the fleet
// config says nothing else (or does not know the node).
const DefaultMaxTags = 50000

// Key is the edge's Sparkplug address, group/edge_id.
func (e Edge) Key() string { return e.Group + "/" + e.EdgeID }

// Instance is a device of an edge: a template bound to a place and its
// parameters, or a connector with settings of its own.
type Instance struct {
	ID        string         `yaml:"id"`
	Path      string         `yaml:"path"`
	Template  string         `yaml:"template"`
	Params    map[string]any `yaml:"params"`
	Overrides map[string]any `yaml:"overrides"`
	// Without a template: the connector and its settings, as in edge.yaml.
	Connector string         `yaml:"connector"`
	Settings  map[string]any `yaml:"settings"`
	// Alarms override the template's alarms of the same name key by key
	// (e.g. another limit, or disabled: true) or add alarms of its own.
	Alarms []map[string]any `yaml:"alarms"`
	// Calculated tags and cycles of this device alone; one with the name of
	// the template's replaces it.
	Calculated []Calculated         `yaml:"calculated"`
	Cycles     []transform.CycleDef `yaml:"cycles"`
}

// Parse decodes a fleet config strictly; source names it in errors.
func Parse(source string, b []byte) (*Config, error) {
	var c Config
	if err := config.Decode(source, b, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// Marshal encodes the config as YAML.
func (c *Config) Marshal() ([]byte, error) { return yaml.Marshal(c) }

// Template returns the named template.
func (c *Config) Template(name string) (*Template, bool) {
	for i := range c.Templates {
		if c.Templates[i].Name == name {
			return &c.Templates[i], true
		}
	}
	return nil, false
}

// Edge returns the edge with the given group/edge_id key.
func (c *Config) Edge(key string) (*Edge, bool) {
	for i := range c.Edges {
		if c.Edges[i].Key() == key {
			return &c.Edges[i], true
		}
	}
	return nil, false
}

// EdgeConfig is what one edge runs: the fleet version it comes from and
// its devices with templates expanded. It travels as YAML.
type EdgeConfig struct {
	Version uint64                   `yaml:"version"`
	Devices []connector.DeviceConfig `yaml:"devices"`
}

// Validate checks the whole fleet: names, the template chains, every
// instance's expansion, and that every device's connector accepts its
// settings (the connectors must be registered).
func (c *Config) Validate() error {
	var errs []error
	names := map[string]bool{}
	for i, t := range c.Templates {
		at := fmt.Sprintf("templates[%d] (%s)", i, t.Name)
		if t.Name == "" {
			errs = append(errs, fmt.Errorf("templates[%d]: name is required", i))
		} else if names[t.Name] {
			errs = append(errs, fmt.Errorf("%s: name used twice", at))
		}
		names[t.Name] = true
		if t.Extends != "" {
			if _, ok := c.Template(t.Extends); !ok {
				errs = append(errs, fmt.Errorf("%s: extends %q: no such template", at, t.Extends))
			}
		}
	}
	for _, t := range c.Templates {
		if _, _, err := c.chain(t.Name); err != nil {
			errs = append(errs, err)
		}
		for i, ct := range t.Calculated {
			at := fmt.Sprintf("template %s calculated[%d] (%s)", t.Name, i, ct.Name)
			if err := uns.Path(ct.Name).Validate(); err != nil {
				errs = append(errs, fmt.Errorf("%s name: %w", at, err))
			}
			if strings.TrimSpace(ct.Expr) == "" {
				errs = append(errs, fmt.Errorf("%s expr: required", at))
			} else if err := ct.Check(); err != nil {
				errs = append(errs, fmt.Errorf("%s expr %q: %v", at, ct.Expr, err))
			}
		}
		for i, cy := range t.Cycles {
			if err := cy.Validate(fmt.Sprintf("template %s cycles[%d] (%s)", t.Name, i, cy.Name)); err != nil {
				errs = append(errs, err)
			}
		}
		for i, a := range t.Alarms {
			if err := a.Validate(fmt.Sprintf("template %s alarms[%d] (%s)", t.Name, i, a.Name)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	edges := map[string]bool{}
	owners := map[string]string{}
	for i, e := range c.Edges {
		at := fmt.Sprintf("edges[%d] (%s)", i, e.Key())
		if e.MaxTags < 0 {
			errs = append(errs, fmt.Errorf("%s max_tags: %d: want 0 (the default, %d) or more", at, e.MaxTags, DefaultMaxTags))
		}
		for _, in := range e.Devices {
			if other, ok := owners[in.Path]; ok && other != e.Key() && in.Path != "" {
				errs = append(errs, fmt.Errorf("%s device %s path %s: given to edge %s too; a UNS path belongs to one edge", at, in.ID, in.Path, other))
			}
			owners[in.Path] = e.Key()
		}
		if err := uns.ValidateSegment(e.Group); err != nil {
			errs = append(errs, fmt.Errorf("%s group: %w", at, err))
		}
		if err := uns.ValidateSegment(e.EdgeID); err != nil {
			errs = append(errs, fmt.Errorf("%s edge_id: %w", at, err))
		}
		if edges[e.Key()] {
			errs = append(errs, fmt.Errorf("%s: edge listed twice", at))
		}
		edges[e.Key()] = true
		ec, err := c.Expand(e.Key(), 0)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		devs, err := connector.BuildDevices("fleet", at+".devices", ec.Devices, nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for j, in := range e.Devices {
			dat := fmt.Sprintf("%s devices[%d] (%s)", at, j, in.ID)
			for k, ct := range in.Calculated {
				if err := uns.Path(ct.Name).Validate(); err != nil {
					errs = append(errs, fmt.Errorf("%s calculated[%d] (%s) name: %w", dat, k, ct.Name, err))
				} else if err := ct.Check(); err != nil {
					errs = append(errs, fmt.Errorf("%s calculated[%d] (%s) expr %q: %v", dat, k, ct.Name, ct.Expr, err))
				}
			}
			for k, cy := range in.Cycles {
				if err := cy.Validate(fmt.Sprintf("%s cycles[%d] (%s)", dat, k, cy.Name)); err != nil {
					errs = append(errs, err)
				}
			}
			var base []transform.AlarmDef
			if in.Template != "" {
				base = byTemplate(c, in.Template, func(t *Template) []transform.AlarmDef { return t.Alarms }, func(x transform.AlarmDef) string { return x.Name })
			}
			alarms, err := overrideAlarms(base, in.Alarms)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s devices[%d] (%s): %w", at, j, in.ID, err))
				continue
			}
			for k, a := range alarms {
				if a.Disabled {
					continue
				}
				if err := a.Validate(fmt.Sprintf("%s devices[%d] (%s) alarms[%d] (%s)", at, j, in.ID, k, a.Name)); err != nil {
					errs = append(errs, err)
				}
			}
			if err := transform.ValidateAlarms(fmt.Sprintf("%s devices[%d] (%s)", at, j, in.ID), alarms); err != nil {
				errs = append(errs, err)
			}
		}
		ids := map[string]bool{}
		for _, d := range devs {
			if ids[d.ID] {
				errs = append(errs, fmt.Errorf("%s: device %q listed twice", at, d.ID))
			}
			ids[d.ID] = true
			if err := d.Path.Validate(); err != nil {
				errs = append(errs, fmt.Errorf("%s device %s path: %w", at, d.ID, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Owners gives each device path of the fleet the edge node (group/edge_id)
// it belongs to: that node's births alone may define tags at or under it.
func (c *Config) Owners() map[uns.Path]string {
	out := map[uns.Path]string{}
	for _, e := range c.Edges {
		for _, in := range e.Devices {
			if in.Path != "" {
				out[uns.Path(in.Path)] = e.Key()
			}
		}
	}
	return out
}

// chain returns the connector and merged settings of a template, following
// extends, and its parameter defaults.
func (c *Config) chain(name string) (kind string, settings map[string]any, err error) {
	var order []*Template
	seen := map[string]bool{}
	for n := name; n != ""; {
		t, ok := c.Template(n)
		if !ok {
			return "", nil, fmt.Errorf("template %q: no such template", n)
		}
		if seen[n] {
			return "", nil, fmt.Errorf("template %q: extends itself through %q", name, n)
		}
		seen[n] = true
		order = append(order, t)
		n = t.Extends
	}
	settings = map[string]any{}
	from := ""
	for _, t := range slices.Backward(order) {
		if t.Connector != "" {
			if kind != "" && kind != t.Connector {
				return "", nil, fmt.Errorf("template %q: connector %s, but %q it extends has %s", t.Name, t.Connector, from, kind)
			}
			kind, from = t.Connector, t.Name
		}
		settings = merge(settings, t.Settings).(map[string]any)
	}
	if kind == "" {
		return "", nil, fmt.Errorf("template %q: no connector in it or what it extends", name)
	}
	return kind, settings, nil
}

func (c *Config) params(name string) map[string]any {
	out := map[string]any{}
	var order []*Template
	for n := name; n != ""; {
		t, ok := c.Template(n)
		if !ok || slices.Contains(order, t) {
			break
		}
		order = append(order, t)
		n = t.Extends
	}
	for _, t := range slices.Backward(order) {
		maps.Copy(out, t.Params)
	}
	return out
}

// Expand returns the device configs of one edge, templates resolved.
func (c *Config) Expand(key string, version uint64) (*EdgeConfig, error) {
	e, ok := c.Edge(key)
	if !ok {
		return nil, fmt.Errorf("fleet: no edge %s", key)
	}
	out := &EdgeConfig{Version: version}
	var errs []error
	for i, in := range e.Devices {
		at := fmt.Sprintf("edge %s devices[%d] (%s)", key, i, in.ID)
		kind, settings := in.Connector, in.Settings
		params := map[string]any{}
		if in.Template != "" {
			if in.Connector != "" || in.Settings != nil {
				errs = append(errs, fmt.Errorf("%s: template, or connector and settings: not both", at))
				continue
			}
			var err error
			if kind, settings, err = c.chain(in.Template); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", at, err))
				continue
			}
			params = c.params(in.Template)
		} else if kind == "" {
			errs = append(errs, fmt.Errorf("%s: a template or a connector is required", at))
			continue
		}
		maps.Copy(params, in.Params)
		params["device"], params["path"] = in.ID, in.Path
		settings = merge(settings, in.Overrides).(map[string]any)
		expanded, err := substitute(settings, params)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", at, err))
			continue
		}
		var node yaml.Node
		if err := node.Encode(expanded); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", at, err))
			continue
		}
		out.Devices = append(out.Devices, connector.DeviceConfig{ID: in.ID, Path: in.Path, Connector: kind, Settings: node, Template: in.Template})
	}
	return out, errors.Join(errs...)
}
