package config

import (
	"crypto/tls"
	"errors"
	"fmt"
)

// TLS names a server certificate and its key in PEM files
// (tls: {cert_file: ..., key_file: ...}).
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Load returns the server's tls.Config (TLS 1.2 at the least), or nil when
// no certificate is configured.
func (t TLS) Load() (*tls.Config, error) {
	if t.CertFile == "" && t.KeyFile == "" {
		return nil, nil
	}
	if t.CertFile == "" || t.KeyFile == "" {
		return nil, errors.New("tls: cert_file and key_file go together")
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
