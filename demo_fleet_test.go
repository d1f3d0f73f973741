package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/calx-iiot/calx/edge/sim"
	"github.com/calx-iiot/calx/fleet"
)

// TestDemoFleetYAML holds the demo's embedded fleet config to the demo's
// running edges: it parses and validates, names the same edges and kilns at
// the same UNS paths with their trip and cycle times, and every tag its
// calculated tags, cycles and alarms read is a kiln tag or a calculated one.
func TestDemoFleetYAML(t *testing.T) {
	c, err := fleet.Parse("examples/demo-fleet.yaml", demoFleetYAML)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Edges) != len(demoSites) {
		t.Fatalf("%d edges in the YAML, %d demo sites", len(c.Edges), len(demoSites))
	}
	for i, s := range demoSites {
		e := c.Edges[i]
		if e.Group != demoEnterprise || e.EdgeID != s.site+"-edge" || e.Site != s.site {
			t.Errorf("edge %d is %s/%s at %s, want %s/%s-edge at %s", i, e.Group, e.EdgeID, e.Site, demoEnterprise, s.site, s.site)
		}
		if len(e.Devices) != len(s.kilns) {
			t.Errorf("%s: %d devices in the YAML, %d kilns run", s.site, len(e.Devices), len(s.kilns))
			continue
		}
		for k, ks := range s.kilns {
			d := e.Devices[k]
			id := fmt.Sprintf("kiln%d", k+1)
			path := fmt.Sprintf("%s/%s/kilns/line%d/%s", demoEnterprise, s.site, k+1, id)
			if d.ID != id || d.Path != path {
				t.Errorf("%s device %d is %s at %s, want %s at %s", s.site, k, d.ID, d.Path, id, path)
			}
			cycle := ks.CycleTime
			if cycle == 0 {
				cycle = time.Minute
			}
			if got, want := fmt.Sprint(d.Params["mtbt"]), ks.MeanTimeBetweenTrips.String(); got != want {
				t.Errorf("%s: mtbt %s in the YAML, the demo runs %s", path, got, want)
			}
			if got, want := fmt.Sprint(d.Params["cycle_time"]), cycle.String(); got != want {
				t.Errorf("%s: cycle_time %s in the YAML, the demo runs %s", path, got, want)
			}
		}
	}

	kiln, err := sim.New("test/kiln", sim.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, td := range kiln.Tags() {
		known[td.Name] = true
	}
	for _, tp := range c.Templates {
		for _, ct := range tp.Calculated {
			known[ct.Name] = true
		}
	}
	check := func(what, tag string) {
		if !known[tag] {
			t.Errorf("%s reads %q, neither a kiln tag nor a calculated one", what, tag)
		}
	}
	for _, tp := range c.Templates {
		for _, cy := range tp.Cycles {
			check("cycle "+cy.Name, cy.Tag)
			for _, a := range cy.Aggregates {
				check("cycle "+cy.Name+" aggregate "+a.Name, a.Tag)
			}
		}
		for _, a := range tp.Alarms {
			check("alarm "+a.Name, a.Tag)
			if sw := a.SuppressWhen; sw != nil && sw.Tag != "" {
				check("alarm "+a.Name+" suppression", sw.Tag)
			}
		}
	}
	if len(c.Templates) == 0 || len(c.Templates[0].Alarms) == 0 || len(c.Templates[0].Cycles) == 0 {
		t.Fatal("the demo's template has no alarms or cycles")
	}
}
