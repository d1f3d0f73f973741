package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// TLS names a server certificate and its key in PEM files
// (tls: {cert_file: ..., key_file: ...}), and optionally the CA whose
// client certificates the listener asks for (client_ca_file: mTLS, beside
// passwords). The files are read again when they change, so that
// certificates rotate without a restart.
type TLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// Load returns the server's tls.Config (TLS 1.2 at the least), or nil when
// no certificate is configured. Each handshake takes the files as they
// are now: a changed certificate, key or CA is used from the next one.
func (t TLS) Load() (*tls.Config, error) {
	if t.CertFile == "" && t.KeyFile == "" {
		if t.ClientCAFile != "" {
			return nil, errors.New("tls: client_ca_file needs cert_file and key_file")
		}
		return nil, nil
	}
	if t.CertFile == "" || t.KeyFile == "" {
		return nil, errors.New("tls: cert_file and key_file go together")
	}
	r := &tlsFiles{t: t}
	base, err := r.config()
	if err != nil {
		return nil, err
	}
	cfg := base.Clone()
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c, err := r.config()
		if err != nil {
			// A file being replaced: keep what worked last.
			return r.last(), nil
		}
		return c, nil
	}
	return cfg, nil
}

// tlsFiles keeps the config made from the files, made again when one of
// their modification times changes.
type tlsFiles struct {
	t TLS

	mu     sync.Mutex
	stamps [3]time.Time
	cfg    *tls.Config
}

func (r *tlsFiles) last() *tls.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg
}

func (r *tlsFiles) config() (*tls.Config, error) {
	var stamps [3]time.Time
	for i, f := range []string{r.t.CertFile, r.t.KeyFile, r.t.ClientCAFile} {
		if f == "" {
			continue
		}
		st, err := os.Stat(f)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		stamps[i] = st.ModTime()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cfg != nil && stamps == r.stamps {
		return r.cfg, nil
	}
	cert, err := tls.LoadX509KeyPair(r.t.CertFile, r.t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if r.t.ClientCAFile != "" {
		pem, err := os.ReadFile(r.t.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: client_ca_file %s: no PEM certificate", r.t.ClientCAFile)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	r.cfg, r.stamps = cfg, stamps
	return cfg, nil
}

// ClientCertificate returns a client's certificate getter for the PEM
// files certFile and keyFile (mTLS), read again when they change.
func ClientCertificate(certFile, keyFile string) (func(*tls.CertificateRequestInfo) (*tls.Certificate, error), error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("tls: cert_file and key_file go together")
	}
	r := &tlsFiles{t: TLS{CertFile: certFile, KeyFile: keyFile}}
	if _, err := r.config(); err != nil {
		return nil, err
	}
	return func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c, err := r.config()
		if err != nil {
			c = r.last() // a file being replaced: keep what worked last
		}
		return &c.Certificates[0], nil
	}, nil
}

// MutualTLS is the tls.Config of a link whose both ends show a certificate
// of one CA (the routes between a cluster's nodes): certFile and keyFile
// are this end's, caFile the CA's; each end verifies the other's.
func MutualTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" || caFile == "" {
		return nil, errors.New("tls: cert_file, key_file and ca_file are all required")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls: ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls: ca_file %s: no PEM certificate", caFile)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}, nil
}
