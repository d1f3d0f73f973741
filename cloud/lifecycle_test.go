package cloud

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestNewValidatesBeforeOpening: a bad account, a NATS port without users
// and a missing listen address are refused by New, which opens nothing.
func TestNewValidatesBeforeOpening(t *testing.T) {
	dir := t.TempDir()
	for name, opts := range map[string]Options{
		"account without a hash":  {DataDir: dir, MQTT: BrokerOptions{Listen: "127.0.0.1:0", Users: []MQTTUser{{Username: "e", Role: RoleEdge, Group: "g", EdgeID: "e"}}}},
		"NATS port without users": {DataDir: dir, MQTT: BrokerOptions{Listen: "127.0.0.1:0"}, NATSListen: "127.0.0.1:0"},
		"no MQTT address":         {DataDir: dir},
		"plant broker scheme":     {DataDir: dir, MQTT: BrokerOptions{Listen: "127.0.0.1:0"}, Uplink: &UplinkOptions{URL: "gopher://plant:1883"}},
	} {
		if _, err := New(opts); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("New wrote %v", entries)
	}
}

// TestFailedStartStopsWhatItStarted: a Start that fails at the broker (its
// port taken) stops the backbone and the historian it had started, so
// that the same data dir starts afterwards, and Shutdown is safe after it,
// twice, and on a cloud never started.
func TestFailedStartStopsWhatItStarted(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	goroutines := runtime.NumGoroutine()
	c, err := New(Options{DataDir: dir, MQTT: BrokerOptions{Listen: taken.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "broker") {
		t.Fatalf("Start on a taken port: %v", err)
	}
	checkFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		if n := runtime.NumGoroutine(); n > goroutines+2 {
			return fmt.Errorf("%d goroutines left of %d before", n, goroutines)
		}
		return nil
	})

	again, err := New(Options{DataDir: dir, MQTT: BrokerOptions{Listen: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Start(context.Background()); err != nil {
		t.Fatalf("the same data dir after a failed start: %v", err)
	}
	if err := c.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown after a failed Start: %v", err)
	}
	if err := again.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := again.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	never, _ := New(Options{DataDir: t.TempDir(), MQTT: BrokerOptions{Listen: "127.0.0.1:0"}})
	if err := never.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown of a cloud never started: %v", err)
	}
}
