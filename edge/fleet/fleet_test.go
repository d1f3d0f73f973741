package fleet

import (
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	_ "github.com/calx-iiot/calx/edge/sim" // registers the signals and clock connectors
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
