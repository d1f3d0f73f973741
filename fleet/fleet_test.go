package fleet

import (
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	_ "github.com/calx-iiot/calx/connector/all" // registers every connector
)

func load(t *testing.T) *Config {
	t.Helper()
	b, err := os.ReadFile("testdata/fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("testdata/fleet.yaml", b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestExpandTemplates(t *testing.T) {
	c := load(t)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	ec, err := c.Expand("limeworks/ghent-edge", 3)
	if err != nil {
		t.Fatal(err)
	}
	if ec.Version != 3 || len(ec.Devices) != 2 || ec.Devices[0].Connector != "signals" || ec.Devices[1].Connector != "clock" {
		t.Fatalf("expanded %+v", ec)
	}
	var got struct {
		Interval string           `yaml:"interval"`
		Seed     int              `yaml:"seed"`
		Signals  []map[string]any `yaml:"signals"`
	}
	if err := ec.Devices[0].Settings.Decode(&got); err != nil {
		t.Fatal(err)
	}
	// extends: the child's interval default and signals merged by name;
	// the instance's override takes its parameter with its type.
	if got.Interval != "100ms" || got.Seed != 7 || len(got.Signals) != 3 {
		t.Fatalf("settings %+v", got)
	}
	temp := got.Signals[0]
	if temp["name"] != "temperature" || temp["deadband"] != 2 || temp["kind"] != "sine" || temp["unit"] != "°C" {
		t.Fatalf("temperature merged into %v", temp)
	}
	ec, _ = c.Expand("limeworks/namur-edge", 3)
	b, _ := yaml.Marshal(&ec.Devices[0].Settings)
	if !strings.Contains(string(b), "interval: 2s") || strings.Contains(string(b), "level") {
		t.Fatalf("namur box1: %s", b)
	}
}

func TestValidateNamesTheProblem(t *testing.T) {
	for name, tc := range map[string]struct {
		edit func(c *Config)
		want string
	}{
		"unknown template":  {func(c *Config) { c.Edges[0].Devices[0].Template = "nosuch" }, `template "nosuch": no such template`},
		"missing parameter": {func(c *Config) { delete(c.Edges[0].Devices[0].Params, "seed") }, "seed: parameter seed has no value"},
		"extends loop":      {func(c *Config) { c.Templates[0].Extends = "fast-signal-box" }, "extends itself"},
		"bad setting": {func(c *Config) { c.Edges[1].Devices[0].Overrides = map[string]any{"intervall": "1s"} },
			"edges[1] (limeworks/namur-edge).devices[0].settings: intervall: unknown key"},
		"bad path":       {func(c *Config) { c.Edges[1].Devices[0].Path = "limeworks/+/x" }, "path"},
		"duplicate edge": {func(c *Config) { c.Edges[1].EdgeID = "ghent-edge" }, "edge listed twice"},
		"both":           {func(c *Config) { c.Edges[0].Devices[0].Connector = "signals" }, "template, or connector and settings: not both"},
	} {
		c := load(t)
		tc.edit(c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
}

const transformsFleet = `templates:
  - name: kiln
    connector: signals
    settings: {interval: 1s, signals: [{name: power_kw, kind: counter}]}
    calculated:
      - {name: energy_kwh, expr: "integral(power_kw)", unit: kWh}
    cycles:
      - name: burn
        tag: cycles
        trigger: increment
        aggregates: [{name: energy_kwh, tag: power_kw, fn: integral, unit: kWh}]
    alarms:
      - {name: co_high, tag: co, kind: high, limit: 500, deadband: 20, on_delay: 10s, priority: high}
      - {name: tripped, tag: state, kind: state, state: tripped}
  - name: big_kiln
    extends: kiln
    alarms:
      - {name: co_high, tag: co, kind: high, limit: 800}
edges:
  - group: g
    edge_id: e1
    devices:
      - {id: k1, path: g/s/k1, template: kiln, alarms: [{name: co_high, limit: 400}, {name: tripped, disabled: true}, {name: o2_low, tag: o2, kind: low, limit: 1}],
         calculated: [{name: energy_kwh, expr: "integral(power_kw, \"s\")", unit: kWs}, {name: o2_1h, expr: "avg_over(o2, \"1h\")"}]}
      - {id: k2, path: g/s/k2, template: big_kiln}
`

func TestTransformsWithOverrides(t *testing.T) {
	c, err := Parse("fleet.yaml", []byte(transformsFleet))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	ds := c.Transforms()
	if len(ds) != 2 {
		t.Fatalf("%d devices", len(ds))
	}
	k1, k2 := ds[0], ds[1]
	if len(k1.Calculated) != 2 || k1.Calculated[0].Unit != "kWs" || k1.Calculated[1].Name != "o2_1h" || len(k1.Cycles) != 1 || k1.Cycles[0].Aggregates[0].Fn != "integral" {
		t.Fatalf("k1 %+v", k1)
	}
	if len(k2.Calculated) != 1 || k2.Calculated[0].Unit != "kWh" {
		t.Fatalf("k2 %+v", k2.Calculated)
	}
	// k1: the limit overridden, the rest of the template's alarm kept.
	if a := k1.Alarms[0]; a.Limit != 400 || a.Deadband != 20 || a.OnDelay.Seconds() != 10 || a.Priority != "high" {
		t.Fatalf("k1 co_high %+v", a)
	}
	if !k1.Alarms[1].Disabled || k1.Alarms[2].Name != "o2_low" || len(k1.Alarms) != 3 {
		t.Fatalf("k1 alarms %+v", k1.Alarms)
	}
	// k2: big_kiln's own co_high replaces kiln's whole.
	if a := k2.Alarms[0]; a.Name != "co_high" || a.Limit != 800 || a.Deadband != 0 || len(k2.Alarms) != 2 {
		t.Fatalf("k2 alarms %+v", k2.Alarms)
	}
	for _, tc := range []struct{ from, to, want string }{
		{"kind: high, limit: 500", "kind: above, limit: 500", `alarms[0] (co_high) kind "above"`},
		{"{name: co_high, limit: 400}", "{name: co_high, limit: fast}", "co_high"},
		{"trigger: increment", "trigger: sometimes", `cycles[0] (burn) trigger "sometimes"`},
		{`integral(power_kw)`, `integral(power_kw, \"week\")`, "calculated[0] (energy_kwh)"},
		{"{name: o2_low, tag: o2, kind: low, limit: 1}", "{name: o2_low, kind: low, limit: 1}", "(o2_low) tag: required"},
		{`avg_over(o2, \"1h\")`, `avg_over(o2)`, "devices[0] (k1) calculated[1] (o2_1h)"},
	} {
		bad := strings.Replace(transformsFleet, tc.from, tc.to, 1)
		c, err := Parse("fleet.yaml", []byte(bad))
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.to, err, tc.want)
		}
	}
}

// An alarm suppressed by another names one of its device's alarms, one
// level deep; a template's alarm may name one an instance adds.
func TestAlarmSuppressedByAlarm(t *testing.T) {
	for _, tc := range []struct {
		extra, want string
	}{
		{`{name: temp_low, tag: t, kind: low, limit: 1, suppress_when: {alarm: tripped}}`, ""},
		{`{name: temp_low, tag: t, kind: low, limit: 1, suppress_when: {alarm: nosuch}}`, `devices[0] (k1) alarm temp_low suppress_when alarm "nosuch": no such alarm of the device`},
		{`{name: temp_low, tag: t, kind: low, limit: 1, suppress_when: {alarm: tripped, tag: run, state: false}}`, "not both"},
		{`{name: tripped, suppress_when: {alarm: co_high}}, {name: temp_low, tag: t, kind: low, limit: 1, suppress_when: {alarm: tripped}}`, "one level only"},
	} {
		fleet := strings.Replace(transformsFleet, `alarms: [{name: co_high, limit: 400}, {name: tripped, disabled: true}, `, `alarms: [`+tc.extra+`, `, 1)
		c, err := Parse("fleet.yaml", []byte(fleet))
		if err != nil {
			t.Fatal(err)
		}
		err = c.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.extra, err, tc.want)
		}
	}
}
