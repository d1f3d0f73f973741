// Package mosquitto runs Eclipse Mosquitto (Debian's package) for tests
// of Calx against a broker that is not its own: on a free loopback port,
// with its persistence in the test's temp dir, stopped with the test.
package mosquitto

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Broker is a running Mosquitto.
type Broker struct {
	t    testing.TB
	Addr string // 127.0.0.1:port
	dir  string
	bin  string
	cmd  *exec.Cmd
}

// Start runs Mosquitto, or skips the test where it is not installed (and
// fails it under CI=true, where .ci/run installs it).
func Start(t testing.TB) *Broker {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin, err = exec.LookPath("/usr/sbin/mosquitto")
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mosquitto is not installed: %v", err)
		}
		t.Skip("mosquitto is not installed (apt-get install mosquitto; .ci/run does)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	b := &Broker{t: t, Addr: addr, dir: t.TempDir(), bin: bin}
	_, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf(`listener %s 127.0.0.1
allow_anonymous true
persistence true
persistence_location %s/
autosave_interval 1
max_queued_messages 0
max_inflight_messages 0
log_dest file %s
`, port, b.dir, filepath.Join(b.dir, "mosquitto.log"))
	if err := os.WriteFile(filepath.Join(b.dir, "mosquitto.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	b.start()
	t.Cleanup(b.Stop)
	return b
}

func (b *Broker) start() {
	b.t.Helper()
	b.cmd = exec.Command(b.bin, "-c", filepath.Join(b.dir, "mosquitto.conf"))
	if err := b.cmd.Start(); err != nil {
		b.t.Fatalf("mosquitto: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", b.Addr, 100*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(b.dir, "mosquitto.log"))
	b.t.Fatalf("mosquitto did not listen on %s in 10s:\n%s", b.Addr, log)
}

// Stop ends Mosquitto as a service stop does (its state is saved).
func (b *Broker) Stop() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	_ = b.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { b.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		b.cmd.Process.Kill()
		<-done
	}
	b.cmd = nil
}

// Restart stops Mosquitto and starts it again on the same port with the
// same saved state.
func (b *Broker) Restart() {
	b.t.Helper()
	b.Stop()
	b.start()
}

// URL is the broker's address for MQTT clients.
func (b *Broker) URL() string { return "tcp://" + b.Addr }
