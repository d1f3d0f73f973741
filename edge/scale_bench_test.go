//go:build linux

package edge_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	mb "github.com/simonvetter/modbus"

	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/edge/modbus"
	"github.com/calx-iiot/calx/uns"
)

// changingPLC answers every read of holding registers with new values, so
// that report by exception holds nothing back: the edge's worst case.
type changingPLC struct {
	mu   sync.Mutex
	seq  uint16
	regs [1000]uint16
}

func (p *changingPLC) HandleCoils(*mb.CoilsRequest) ([]bool, error) {
	return nil, mb.ErrIllegalFunction
}
func (p *changingPLC) HandleDiscreteInputs(*mb.DiscreteInputsRequest) ([]bool, error) {
	return nil, mb.ErrIllegalFunction
}
func (p *changingPLC) HandleInputRegisters(*mb.InputRegistersRequest) ([]uint16, error) {
	return nil, mb.ErrIllegalFunction
}
func (p *changingPLC) HandleHoldingRegisters(r *mb.HoldingRegistersRequest) ([]uint16, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.IsWrite || int(r.Addr)+int(r.Quantity) > len(p.regs) {
		return nil, mb.ErrIllegalDataAddress
	}
	p.seq++
	out := make([]uint16, r.Quantity)
	for i := range out {
		out[i] = p.seq + uint16(i)
	}
	return out, nil
}

// BenchmarkEdgeModbus is one Calx edge reading 1,000 Modbus TCP devices of
// 100 holding registers each every second (100,000 values a second, every
// one changed), through report by exception, the store-and-forward buffer
// and Sparkplug B, to an MQTT broker. The devices are real servers on
// loopback and the broker a real one, both in a process of their own (this
// test binary started again as the peers), so that the CPU it reports is
// the edge's alone ("cpu%", of one core, from the end of its start: once
// a round of every device has been sent); "peers-cpu%" is theirs.
// BenchmarkFleet in edge/modbus measures the connectors alone.
func BenchmarkEdgeModbus(b *testing.B) {
	if testing.Short() { // a smoke check of the steps (make test)
		benchEdgeModbus(b, 5, time.Second)
		return
	}
	benchEdgeModbus(b, 1000, 5*time.Second)
}

// TestEdgeModbusSmoke runs the benchmark's steps with 5 devices for a
// second; no timing asserted.
func TestEdgeModbusSmoke(t *testing.T) {
	res := testing.Benchmark(func(b *testing.B) { benchEdgeModbus(b, 5, time.Second) })
	if res.N == 0 || res.Extra["sent/s"] < 100 {
		t.Fatalf("edge of 5 devices: %v %v", res, res.Extra)
	}
}

// peersEnv, set to a count of devices, makes this test binary the peers of
// BenchmarkEdgeModbus instead of running tests: a broker and the devices'
// servers, their addresses written as JSON to standard output, until
// standard input closes.
const peersEnv = "CALX_BENCH_MODBUS_PEERS"

func TestMain(m *testing.M) {
	if n := os.Getenv(peersEnv); n != "" {
		if err := runPeers(n, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "peers:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type peerAddrs struct {
	Broker  string   `json:"broker"`
	Devices []string `json:"devices"`
}

func runPeers(count string, in io.Reader, out io.Writer) error {
	n, err := strconv.Atoi(count)
	if err != nil {
		return err
	}
	broker := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := broker.AddHook(new(auth.AllowHook), nil); err != nil {
		return err
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "bench", Address: "127.0.0.1:0"})
	if err := broker.AddListener(tcp); err != nil {
		return err
	}
	if err := broker.Serve(); err != nil {
		return err
	}
	defer broker.Close()
	addrs := peerAddrs{Broker: tcp.Address()}
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr := l.Addr().String()
		l.Close()
		srv, err := mb.NewServer(&mb.ServerConfiguration{URL: "tcp://" + addr, MaxClients: 2, Timeout: time.Minute, Logger: log.New(io.Discard, "", 0)}, &changingPLC{})
		if err != nil {
			return err
		}
		if err := srv.Start(); err != nil {
			return err
		}
		defer srv.Stop()
		addrs.Devices = append(addrs.Devices, addr)
	}
	if err := json.NewEncoder(out).Encode(addrs); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, in) // until the benchmark is done
	return err
}

// startPeers starts the peers' process with n devices.
func startPeers(b *testing.B, n int) (peerAddrs, *os.Process) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), peersEnv+"="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			b.Errorf("peers: %v", err)
		}
	})
	var addrs peerAddrs
	if err := json.NewDecoder(stdout).Decode(&addrs); err != nil {
		b.Fatalf("peers' addresses: %v", err)
	}
	return addrs, cmd.Process
}

// procCPU is the CPU time a process has used, from /proc (in the kernel's
// clock ticks of 1/100 s).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command's name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

func benchEdgeModbus(b *testing.B, devices int, run time.Duration) {
	addrs, peers := startPeers(b, devices)
	var devs []edge.Device
	for i, addr := range addrs.Devices {
		var tags []*modbus.Tag
		for r := range 100 {
			tags = append(tags, &modbus.Tag{Name: fmt.Sprintf("r%d", r), Address: uint16(r), Type: "uint16"})
		}
		id := fmt.Sprintf("plc%04d", i)
		d, err := modbus.New(id, modbus.Settings{URL: "tcp://" + addr, Interval: time.Second, Tags: tags}, nil)
		if err != nil {
			b.Fatal(err)
		}
		devs = append(devs, edge.Device{ID: id, Path: uns.Path("limeworks/bench/area/line/" + id), Connector: d})
	}
	for b.Loop() {
		e, err := edge.New(edge.Options{Broker: "tcp://" + addrs.Broker, Group: "bench", EdgeID: "e1",
			DataDir: filepath.Join(b.TempDir(), "edge"), Devices: devs})
		if err != nil {
			b.Fatal(err)
		}
		if err := e.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		// Measured once the edge is up and a round of every device has
		// gone out (the births of the start are not the steady state).
		warm := time.Now()
		for e.Stats().Sent < uint64(devices*100) && time.Since(warm) < 30*time.Second {
			time.Sleep(50 * time.Millisecond)
		}
		var before syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &before)
		peersBefore := procCPU(peers.Pid)
		st0 := e.Stats()
		start := time.Now()
		time.Sleep(run)
		st := e.Stats()
		el := time.Since(start).Seconds()
		var after syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &after)
		peersCPU := procCPU(peers.Pid) - peersBefore
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = e.Shutdown(ctx)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
		b.ReportMetric(float64(st.Read-st0.Read)/el, "read/s")
		b.ReportMetric(float64(st.Sent-st0.Sent)/el, "sent/s")
		b.ReportMetric(float64(st.Dropped), "dropped")
		b.ReportMetric(cpu.Seconds()/el*100, "cpu%")
		b.ReportMetric(peersCPU.Seconds()/el*100, "peers-cpu%")
	}
}
