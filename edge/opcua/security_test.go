package opcua

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/connector"
	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/uns"
)

// gopcua's server does not serve Basic256Sha256, so security and user
// names are tested against node-opcua (interop/opcua, installed by make test).

// nodeServer is a running node-opcua server.
type nodeServer struct {
	url string
	ns  int
}

func startNodeServer(t testing.TB, env ...string) nodeServer {
	t.Helper()
	dir := filepath.Join("..", "..", "interop", "opcua")
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(dir, "node_modules", "node-opcua"))
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("node-opcua missing (%v): make test installs it with npm", err)
		}
		t.Skipf("OPC UA security test skipped: node or node-opcua missing (%v); run make test", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(node, "server.js")
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "PORT="+strconv.Itoa(port), "PKI_DIR="+t.TempDir(), "OPC_USER=operator", "OPC_PASSWORD=secret"), env...)
	var stderr bytes.Buffer // node-opcua's warnings, shown when the test fails
	cmd.Stderr = &stderr
	out, _ := cmd.StdoutPipe()
	in, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("node-opcua server stderr:\n%s", stderr.String())
		}
	})
	ready := make(chan nodeServer, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "READY" {
				ns, _ := strconv.Atoi(f[2])
				ready <- nodeServer{url: f[1], ns: ns}
			}
		}
	}()
	select {
	case s := <-ready:
		return s
	case <-time.After(5 * time.Minute):
		t.Fatal("node-opcua server did not start in 5 minutes")
	}
	return nodeServer{}
}

func (s nodeServer) tags() []*Tag {
	return []*Tag{
		{Name: "temp", NodeID: fmt.Sprintf("ns=%d;s=Kiln1.Temp", s.ns), TagOptions: connector.TagOptions{Unit: "°C"}},
		{Name: "setpoint", NodeID: fmt.Sprintf("ns=%d;s=Kiln1.Setpoint", s.ns), TagOptions: connector.TagOptions{Writable: true}},
	}
}

// With Basic256Sha256 SignAndEncrypt, a user name and no certificates
// configured, the connector makes its application certificate, refuses
// the server's until it is moved from rejected/ to trusted/, and then
// reads and writes over the encrypted channel.
func TestSignAndEncryptTrustListAndUser(t *testing.T) {
	s := startNodeServer(t)
	srv, err := New("kiln1", Settings{Endpoint: s.url, SecurityPolicy: "Basic256Sha256", Username: "operator", Password: "secret",
		Interval: 100 * time.Millisecond, Tags: s.tags()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sink := edgetest.Run(t, srv)
	pki := filepath.Join(sink.Dir, "pki")
	var rejected string
	edgetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		errs := sink.LostErrors()
		if len(errs) == 0 {
			return errors.New("not refused yet")
		}
		if !strings.Contains(errs[0].Error(), "is not trusted") {
			return fmt.Errorf("refused with %v", errs[0])
		}
		files, _ := filepath.Glob(filepath.Join(pki, "rejected", "*.der"))
		if len(files) != 1 {
			return fmt.Errorf("rejected/ holds %v", files)
		}
		rejected = files[0]
		return nil
	})
	if r, ok := sink.Get("temp"); ok {
		t.Fatalf("read %+v from an untrusted server", r)
	}
	b, err := os.ReadFile(filepath.Join(pki, "own", "cert.pem"))
	if err != nil {
		t.Fatalf("no application certificate made: %v", err)
	}
	if c, err := x509.ParseCertificate(pemOrDER(b)); err != nil || len(c.URIs) == 0 || !strings.HasPrefix(c.URIs[0].String(), "urn:calx:edge:") {
		t.Fatalf("application certificate without an application URI: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(pki, "trusted"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(rejected, filepath.Join(pki, "trusted", filepath.Base(rejected))); err != nil {
		t.Fatal(err)
	}
	edgetest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if r := get(sink, "temp"); !r.Value.Equal(uns.Float(1101.5)) || r.Quality != uns.Good {
			return fmt.Errorf("temp = %+v, losses %v", r, sink.LostErrors())
		}
		return nil
	})
	if err := srv.Write(context.Background(), "setpoint", uns.Float(21.5)); err != nil {
		t.Fatal(err)
	}
	edgetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if r := get(sink, "setpoint"); !r.Value.Equal(uns.Float(21.5)) {
			return fmt.Errorf("setpoint = %+v", r.Value)
		}
		return nil
	})
}

// Sign only, with a given application certificate and the server's named
// in server_cert_file: a wrong password is refused by the server, and no
// value is read.
func TestSignWithGivenCertificatesWrongPassword(t *testing.T) {
	s := startNodeServer(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "calx.pem"), filepath.Join(dir, "calx.key")
	if err := makeAppCert(cert, key, "kiln1"); err != nil {
		t.Fatal(err)
	}
	// Trust the server's certificate as an administrator would: from the
	// rejected/ of a first attempt.
	probe, err := New("probe", Settings{Endpoint: s.url, SecurityPolicy: "Basic256Sha256", SecurityMode: "Sign",
		CertFile: cert, KeyFile: key, PKIDir: dir, Username: "operator", Password: "secret", Tags: s.tags()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := probe.connectOptions(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "is not trusted") {
		t.Fatalf("untrusted server: %v", err)
	}
	rejected, _ := filepath.Glob(filepath.Join(dir, "rejected", "*.der"))
	if len(rejected) != 1 {
		t.Fatalf("rejected/ holds %v", rejected)
	}
	for pw, ok := range map[string]bool{"wrong": false, "secret": true} {
		srv, err := New("kiln1", Settings{Endpoint: s.url, SecurityPolicy: "Basic256Sha256", SecurityMode: "Sign",
			CertFile: cert, KeyFile: key, ServerCertFile: rejected[0], Username: "operator", Password: pw,
			Mode: "poll", Interval: 100 * time.Millisecond, Tags: s.tags()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		sink := edgetest.Run(t, srv)
		edgetest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			r := get(sink, "temp")
			switch {
			case ok && !r.Value.Equal(uns.Float(1101.5)):
				return fmt.Errorf("temp = %+v, losses %v", r, sink.LostErrors())
			case !ok && len(sink.LostErrors()) == 0:
				return errors.New("wrong password not refused yet")
			}
			return nil
		})
		if !ok {
			if r, read := sink.Get("temp"); read {
				t.Fatalf("read %+v with a wrong password", r)
			}
			t.Logf("wrong password: %v", sink.LostErrors()[0])
		}
	}
}
