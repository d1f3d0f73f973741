package fault

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/crypto/bcrypt"
)

// calx cloud reads its config file again on SIGHUP: a user's new password
// holds and the old one stops, a removed MQTT account is refused, and a
// broken file changes nothing and says why.
func TestSIGHUPReloadsAccounts(t *testing.T) {
	if testing.Short() {
		t.Skip("fault tests run the real binary; skipped with -short")
	}
	dir := t.TempDir()
	httpAddr, mqttAddr := freeAddr(t), freeAddr(t)
	hash := func(pw string) string {
		h, _ := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		return string(h)
	}
	cfg := filepath.Join(dir, "cloud.yaml")
	write := func(users, readers string) {
		y := fmt.Sprintf("data_dir: %s\nhttp: {listen: %s}\nmqtt: {listen: %s}\nusers:\n%sreaders:\n%s",
			filepath.Join(dir, "cloud"), httpAddr, mqttAddr, users, readers)
		if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	user := func(name, pw string) string {
		return fmt.Sprintf("  - {username: %s, password_hash: '%s', role: viewer}\n", name, hash(pw))
	}
	write(user("ann", "ann-first-password"), fmt.Sprintf("  - {username: hmi, password_hash: '%s'}\n", hash("hmi-password")))
	s := &site{t: t, dir: dir, httpAddr: httpAddr}
	s.cloud = &proc{t: t, args: []string{"cloud", "--config", cfg, "--log-format", "json"}}
	t.Cleanup(func() {
		s.cloud.stop()
		if t.Failed() {
			t.Logf("cloud output:\n%s", s.cloud.output())
		}
	})
	s.startCloud()
	login := func(name, pw string) int {
		b, _ := json.Marshal(map[string]string{"username": name, "password": pw})
		res, err := http.Post("http://"+httpAddr+"/api/v1/login", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	mqttLogin := func(name, pw string) error {
		cl := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + mqttAddr).SetClientID(name).
			SetUsername(name).SetPassword(pw).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
		tok := cl.Connect()
		tok.WaitTimeout(5 * time.Second)
		if tok.Error() == nil {
			cl.Disconnect(10)
		}
		return tok.Error()
	}
	if login("ann", "ann-first-password") != 200 || mqttLogin("hmi", "hmi-password") != nil {
		t.Fatal("the first config's accounts do not sign in")
	}

	write(user("ann", "ann-second-password")+user("bob", "bob-password-1"), "  []\n")
	if err := s.cloud.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if c := login("ann", "ann-second-password"); c != 200 {
			return fmt.Errorf("ann's new password: %d", c)
		}
		return nil
	})
	if c := login("ann", "ann-first-password"); c != 401 {
		t.Errorf("ann's old password after the reload: %d", c)
	}
	if c := login("bob", "bob-password-1"); c != 200 {
		t.Errorf("bob, added: %d", c)
	}
	if err := mqttLogin("hmi", "hmi-password"); err == nil {
		t.Error("the removed reader still signs in")
	}

	// A broken file: refused with its name, the accounts as they were.
	if err := os.WriteFile(cfg, []byte("users:\n  - {username: ann, password_hash: plain, role: viewer}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.cloud.cmd.Process.Signal(syscall.SIGHUP)
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if out := s.cloud.output(); !strings.Contains(out, "config not reloaded") || !strings.Contains(out, "cloud.yaml") {
			return fmt.Errorf("no log line of the refused reload")
		}
		return nil
	})
	if c := login("ann", "ann-second-password"); c != 200 {
		t.Errorf("ann after a refused reload: %d", c)
	}
	if s.cloud.cmd.ProcessState != nil {
		t.Error("calx cloud stopped on SIGHUP")
	}
}
