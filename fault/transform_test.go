//go:build linux

package fault

import (
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// The kiln of the transforms test: power a sine between 100 and 300 kW with
// a period of 2 s, a cycle at every rising edge of a square wave of the
// same period, CO a square wave between 50 and 900 mg/Nm3 with a period of
// 5 s, all read every 50 ms.
const (
	kilnPath   = "limeworks/fault/kilns/line1/kiln1"
	kilnPeriod = 2 * time.Second
	powerLow   = 100.0
	powerHigh  = 300.0
	coLimit    = 500.0
	coDeadband = 50.0
)

const kilnSignals = `{interval: 50ms, signals: [
      {name: power_kw, kind: sine, low: 100, high: 300, period: 2s},
      {name: cycle, kind: square, low: 0, high: 1, period: 2s},
      {name: co_mg, kind: square, low: 50, high: 900, period: 5s}]}`

const kilnFleet = `templates:
  - name: kiln
    connector: signals
    settings: ` + kilnSignals + `
    calculated:
      - {name: energy_kwh, expr: "integral(power_kw)", unit: kWh}
      - {name: co_avg_10s, expr: "avg_over(co_mg, \"10s\")", unit: mg/Nm3}
    cycles:
      - name: burn
        tag: cycle
        trigger: rising
        aggregates:
          - {name: energy_kwh, tag: power_kw, fn: integral, unit: kWh}
          - {name: max_co, tag: co_mg, fn: max}
    alarms:
      - {name: co_high, tag: co_mg, kind: high, limit: 500, deadband: 50, priority: high, class: emission}
edges:
  - group: limeworks
    edge_id: kiln-edge
    devices: [{id: kiln1, path: ` + kilnPath + `, template: kiln}]
`

// TestTransformsSurviveACloudKill runs a simulated kiln through cycles with
// a known power and a CO excursion every 5 s, kills the cloud with SIGKILL
// in the middle of a cycle and starts it again, and then checks that every
// cycle was recorded once, back to back, with the energy of the analytic
// integral of the power over it (within 0.5 %), and that the alarm
// journal holds exactly the raises and clears the stored CO values call
// for, at their times.
func TestTransformsSurviveACloudKill(t *testing.T) {
	dir := t.TempDir()
	httpAddr, mqttAddr := freeAddr(t), freeAddr(t)
	hash, _ := bcrypt.GenerateFromPassword([]byte("edge-pw"), bcrypt.MinCost)
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cloudCfg := write("cloud.yaml", fmt.Sprintf(`data_dir: %s
http: {listen: %s}
mqtt: {listen: %s}
edges:
  - {username: kiln-edge, password_hash: '%s', group: limeworks, edge_id: kiln-edge}
`, filepath.Join(dir, "cloud"), httpAddr, mqttAddr, hash))
	edgeCfg := write("edge.yaml", fmt.Sprintf(`data_dir: %s
cloud:
  broker: tcp://%s
  username: kiln-edge
  password: edge-pw
  group: limeworks
  edge_id: kiln-edge
devices:
  - id: kiln1
    path: %s
    connector: signals
    settings: %s
`, filepath.Join(dir, "edge"), mqttAddr, kilnPath, kilnSignals))
	c := &client{addr: httpAddr}
	cloud := &proc{t: t, args: []string{"cloud", "--config", cloudCfg, "--log-level", "warn"}}
	edge := &proc{t: t, args: []string{"edge", "--config", edgeCfg, "--log-level", "warn"}}
	t.Cleanup(func() {
		edge.stop()
		cloud.stop()
		if t.Failed() {
			t.Logf("cloud output:\n%s\nedge output:\n%s", cloud.output(), edge.output())
		}
	})
	startCloud := func() {
		cloud.start()
		c.token = ""
		waitReady(t, httpAddr, 50*time.Millisecond)
	}
	startCloud()
	if err := c.do("PUT", "/api/v1/config?message=kiln", []byte(kilnFleet), nil); err != nil {
		t.Fatal(err)
	}
	edge.start()

	cycles := func() []cycleRow {
		var out struct {
			Cycles []cycleRow `json:"cycles"`
		}
		q := url.Values{"machine": {kilnPath}, "from": {time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}}
		if err := c.do("GET", "/api/v1/cycles?"+q.Encode(), nil, &out); err != nil {
			t.Fatal(err)
		}
		return out.Cycles
	}
	waitCycles := func(n int) []cycleRow {
		var cs []cycleRow
		checkFor(t, 60*time.Second, 200*time.Millisecond, func() error {
			if cs = cycles(); len(cs) < n {
				return fmt.Errorf("%d cycles recorded, waiting for %d", len(cs), n)
			}
			return nil
		})
		return cs
	}
	before := waitCycles(4)
	// Kill it in the middle of a cycle.
	mid := before[len(before)-1].End.Add(kilnPeriod / 2)
	time.Sleep(time.Until(mid))
	cloud.kill()
	killedAt := time.Now()
	time.Sleep(3 * time.Second)
	startCloud()
	after := waitCycles(len(before) + 6)
	t.Logf("%d cycles before the kill, %d in all; the cloud was down from %s for 3 s", len(before), len(after), killedAt.Format("15:04:05.000"))

	// Every cycle back to back, the one cut by the kill included.
	covered := false
	for i, cy := range after {
		if i > 0 && !cy.Start.Equal(after[i-1].End) {
			t.Errorf("cycle %d starts at %s, the one before ended at %s: a cycle is missing", i, cy.Start, after[i-1].End)
		}
		if d := cy.End.Sub(cy.Start); d < kilnPeriod-200*time.Millisecond || d > kilnPeriod+200*time.Millisecond {
			t.Errorf("cycle %d lasted %s", i, d)
		}
		if !cy.Start.After(killedAt) && cy.End.After(killedAt) {
			covered = true
		}
	}
	if !covered {
		t.Errorf("no cycle spans the kill at %s", killedAt)
	}
	// The power's phase: the sine starts at its mean at the first read.
	var hist struct {
		Points []struct {
			TS time.Time `json:"ts"`
		} `json:"points"`
	}
	q := url.Values{"path": {kilnPath + "/power_kw"}, "from": {time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}, "limit": {"1"}}
	if err := c.do("GET", "/api/v1/history?"+q.Encode(), nil, &hist); err != nil || len(hist.Points) == 0 {
		t.Fatalf("first power value: %v %v", hist.Points, err)
	}
	t0 := hist.Points[0].TS
	w := 2 * math.Pi / kilnPeriod.Seconds()
	energy := func(a, b time.Time) float64 { // kWh, the analytic integral
		x, y := a.Sub(t0).Seconds(), b.Sub(t0).Seconds()
		mean, amp := (powerLow+powerHigh)/2, (powerHigh-powerLow)/2
		return (mean*(y-x) - amp/w*(math.Cos(w*y)-math.Cos(w*x))) / 3600
	}
	for i, cy := range after {
		want := energy(cy.Start, cy.End)
		if got := cy.Values["energy_kwh"]; math.Abs(got-want) > 0.005*want {
			t.Errorf("cycle %d (%s to %s): %.6f kWh, the integral is %.6f (%.2f %% off)", i, cy.Start.Format("15:04:05.000"), cy.End.Format("15:04:05.000"), got, want, 100*(got-want)/want)
		}
	}

	// The alarm journal against the stored CO values.
	from := after[0].Start
	to := after[len(after)-1].End
	var co struct {
		Points []struct {
			TS    time.Time `json:"ts"`
			Value *float64  `json:"value"`
		} `json:"points"`
	}
	q = url.Values{"path": {kilnPath + "/co_mg"}, "from": {from.Add(-time.Minute).UTC().Format(time.RFC3339Nano)}, "to": {to.UTC().Format(time.RFC3339Nano)}, "limit": {"100000"}}
	if err := c.do("GET", "/api/v1/history?"+q.Encode(), nil, &co); err != nil {
		t.Fatal(err)
	}
	var want []string
	active := false
	for _, p := range co.Points {
		if p.Value == nil {
			continue
		}
		switch v := *p.Value; {
		case !active && v > coLimit:
			active = true
			if !p.TS.Before(from) {
				want = append(want, "raise@"+p.TS.UTC().Format(time.RFC3339Nano))
			}
		case active && v < coLimit-coDeadband:
			active = false
			if !p.TS.Before(from) {
				want = append(want, "clear@"+p.TS.UTC().Format(time.RFC3339Nano))
			}
		}
	}
	var journal struct {
		Transitions []struct {
			TS    time.Time `json:"ts"`
			Event string    `json:"event"`
		} `json:"transitions"`
	}
	q = url.Values{"alarm": {kilnPath + "/_alarms/co_high"}, "from": {from.UTC().Format(time.RFC3339Nano)}, "to": {to.UTC().Format(time.RFC3339Nano)}}
	if err := c.do("GET", "/api/v1/alarms/journal?"+q.Encode(), nil, &journal); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tr := range journal.Transitions {
		got = append(got, tr.Event+"@"+tr.TS.UTC().Format(time.RFC3339Nano))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("alarm journal\n%v\nwant, from the stored CO values,\n%v", got, want)
	}
	if len(want) < 6 {
		t.Errorf("only %d alarm transitions in %s", len(want), to.Sub(from))
	}
	// The alarm can be acknowledged; the journal keeps who did it.
	var st struct {
		Alarms []struct {
			Path  string `json:"path"`
			State string `json:"state"`
		} `json:"alarms"`
	}
	if err := c.do("GET", "/api/v1/alarms?device="+kilnPath, nil, &st); err != nil || len(st.Alarms) != 1 {
		t.Fatalf("alarms %+v %v", st, err)
	}
	var tr struct {
		Event, User, State string
	}
	if err := c.do("POST", "/api/v1/alarms/ack", []byte(`{"path": "`+kilnPath+`/_alarms/co_high", "comment": "seen"}`), &tr); err != nil || tr.Event != "ack" || tr.User != "admin" {
		t.Fatalf("ack: %+v %v", tr, err)
	}
}

type cycleRow struct {
	Start  time.Time          `json:"start"`
	End    time.Time          `json:"end"`
	Values map[string]float64 `json:"values"`
}
