package main

import (
	"fmt"
	"io"
	"log"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mb "github.com/simonvetter/modbus"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/edge/modbus"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/web/webtest"
)

// counterPLC is a Modbus TCP server whose holding register 0 counts the
// reads and register 1 holds 42.
type counterPLC struct {
	mu    sync.Mutex
	reads uint16
	srv   *mb.ModbusServer
	addr  string
}

func (p *counterPLC) HandleCoils(*mb.CoilsRequest) ([]bool, error) { return nil, mb.ErrIllegalFunction }
func (p *counterPLC) HandleDiscreteInputs(*mb.DiscreteInputsRequest) ([]bool, error) {
	return nil, mb.ErrIllegalFunction
}
func (p *counterPLC) HandleInputRegisters(*mb.InputRegistersRequest) ([]uint16, error) {
	return nil, mb.ErrIllegalFunction
}
func (p *counterPLC) HandleHoldingRegisters(r *mb.HoldingRegistersRequest) ([]uint16, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.IsWrite || int(r.Addr)+int(r.Quantity) > 2 {
		return nil, mb.ErrIllegalDataAddress
	}
	p.reads++
	return []uint16{p.reads, 42}[r.Addr : r.Addr+r.Quantity], nil
}

func startCounterPLC(t *testing.T) *counterPLC {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &counterPLC{addr: l.Addr().String()}
	l.Close()
	p.srv, err = mb.NewServer(&mb.ServerConfiguration{URL: "tcp://" + p.addr, Timeout: 30 * time.Second, MaxClients: 10,
		Logger: log.New(io.Discard, "", 0)}, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.srv.Stop() })
	return p
}

// TestFleetHealth runs a cloud with two edges on real Modbus servers: one
// whose counter keeps changing, one whose only value never changes (so
// report by exception sends nothing after it). The quiet one raises the
// stale-data alarm while its link is up; the busy one goes degraded within
// 2 s of losing its PLC, and down as soon as its connection is lost.
func TestFleetHealth(t *testing.T) {
	dir := t.TempDir()
	hash, err := cloud.HashPassword("edge-pw")
	if err != nil {
		t.Fatal(err)
	}
	var users []cloud.MQTTUser
	for _, id := range []string{"busy", "quiet"} {
		users = append(users, cloud.MQTTUser{Username: id, PasswordHash: hash, Role: cloud.RoleEdge, Group: "g", EdgeID: id})
	}
	app := webtest.Start(t, cloud.Options{DataDir: filepath.Join(dir, "cloud"),
		MQTT:   cloud.BrokerOptions{Listen: "127.0.0.1:0", Users: users},
		Health: cloud.HealthOptions{StaleAfter: 1500 * time.Millisecond, OfflineAfter: time.Second, Every: 100 * time.Millisecond}})
	api := app.Admin()

	startEdge := func(id string, plc *counterPLC, register uint16) {
		dev, err := modbus.New(id, modbus.Settings{URL: "tcp://" + plc.addr, Interval: 50 * time.Millisecond, Timeout: 300 * time.Millisecond,
			Tags: []*modbus.Tag{{Name: "value", Area: "holding", Address: register, Type: "uint16"}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		edgetest.Start(t, edge.Options{Broker: "tcp://" + app.Cloud.Broker.Addr(), Username: id, Password: "edge-pw", Group: "g", EdgeID: id,
			PrimaryHost: "calx", DataDir: filepath.Join(dir, id), KeepAlive: 5 * time.Second,
			Devices: []edge.Device{{ID: "plc", Path: uns.Path("ent/site/area/line/" + id), Connector: dev}}})
	}
	busyPLC, quietPLC := startCounterPLC(t), startCounterPLC(t)
	startEdge("busy", busyPLC, 0)
	startEdge("quiet", quietPLC, 1)

	edgeJSON := func(id string) map[string]any {
		code, out := api.Do("GET", "/api/v1/edges/g/"+id, nil)
		if code != 200 {
			t.Fatalf("GET edge %s: %d %v", id, code, out)
		}
		return out
	}
	activeKinds := func(id string) []string {
		var kinds []string
		for _, a := range edgeJSON(id)["alarms"].([]any) {
			kinds = append(kinds, a.(map[string]any)["kind"].(string))
		}
		return kinds
	}
	// Both come up ok with their connection reported.
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		for _, id := range []string{"busy", "quiet"} {
			code, e := api.Do("GET", "/api/v1/edges/g/"+id, nil)
			if code != 200 {
				return fmt.Errorf("GET edge %s: %d %v", id, code, e)
			}
			conns, _ := e["connections"].([]any)
			if e["verdict"] != "ok" || len(conns) != 1 || conns[0].(map[string]any)["connected"] != true {
				return fmt.Errorf("%s: %v %v %v", id, e["verdict"], e["reasons"], conns)
			}
		}
		return nil
	})

	// The quiet edge's data stops although its link is up: stale alarm.
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if k := activeKinds("quiet"); len(k) != 1 || k[0] != "stale" {
			return fmt.Errorf("quiet edge alarms %v, reasons %v", k, edgeJSON("quiet")["reasons"])
		}
		return nil
	})
	if e := edgeJSON("quiet"); e["verdict"] != "degraded" || e["online"] != true {
		t.Fatalf("quiet edge: %v online %v", e["verdict"], e["online"])
	}
	if k := activeKinds("busy"); len(k) != 0 {
		t.Fatalf("busy edge has alarms %v", k)
	}
	// The busy edge's counter changes at every 50 ms read.
	if e := edgeJSON("busy"); e["values_per_sec"].(float64) < 5 {
		t.Fatalf("busy edge data rate %v values/s", e["values_per_sec"])
	}
	if e := edgeJSON("quiet"); e["values_per_sec"].(float64) != 0 {
		t.Fatalf("quiet edge data rate %v values/s", e["values_per_sec"])
	}

	// The busy edge loses its PLC: connection down, degraded, within 2 s.
	busyPLC.srv.Stop()
	lost := time.Now()
	checkFor(t, 2*time.Second, 20*time.Millisecond, func() error {
		e := edgeJSON("busy")
		conn := e["connections"].([]any)[0].(map[string]any)
		if e["verdict"] != "degraded" || conn["connected"] != false {
			return fmt.Errorf("busy edge %v, connection %v", e["verdict"], conn)
		}
		return nil
	})
	t.Logf("connection loss seen by the cloud after %s", time.Since(lost).Round(time.Millisecond))
	checkFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		if k := activeKinds("busy"); !strings.Contains(strings.Join(k, ","), "connector/plc") {
			return fmt.Errorf("busy edge alarms %v", k)
		}
		return nil
	})

	// Its network connection breaks: down at once (the broker sends its
	// Will), the offline alarm after offline_after.
	if err := app.Cloud.Broker.Disconnect("g.busy"); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 2*time.Second, 20*time.Millisecond, func() error {
		e := edgeJSON("busy")
		if e["verdict"] != "down" || !strings.Contains(fmt.Sprint(e["reasons"]), "connection lost") {
			return fmt.Errorf("busy edge %v: %v", e["verdict"], e["reasons"])
		}
		return nil
	})
	_, out := api.Do("GET", "/api/v1/fleet/alarms?edge=g/busy", nil)
	var transitions []string
	for _, a := range out["journal"].([]any) {
		m := a.(map[string]any)
		transitions = append(transitions, fmt.Sprint(m["kind"], " ", m["active"]))
	}
	if !strings.Contains(strings.Join(transitions, ","), "connector/plc true") {
		t.Fatalf("journal of busy: %v", transitions)
	}
	if code, out := api.Do("GET", "/api/v1/edges?verdict=sideways", nil); code != 400 || !strings.Contains(fmt.Sprint(out["error"]), "verdict") {
		t.Fatalf("bad verdict filter: %d %v", code, out)
	}
	if code, _ := api.Do("GET", "/api/v1/edges/g/nobody", nil); code != 404 {
		t.Fatalf("unknown edge: %d", code)
	}
}
