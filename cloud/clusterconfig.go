package cloud

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/calx-iiot/calx/config"
	"github.com/calx-iiot/calx/store"
)

// ClusterConfig makes the cloud a node of a cluster of clouds (docs/CLUSTER.md):
//
//	cluster:
//	  name: calx
//	  node: n1
//	  listen: 127.0.0.1:6222
//	  routes: [127.0.0.1:6223, 127.0.0.1:6224]
//	  secret_file: /etc/calx/cluster.secret
//	  tls: {cert_file: node.crt, key_file: node.key, ca_file: ca.crt}
type ClusterConfig struct {
	Name   string   `yaml:"name"`
	Node   string   `yaml:"node"`
	Listen string   `yaml:"listen"`
	Routes []string `yaml:"routes"`
	// Advertise is where the other nodes reach this node's routes when
	// not at Listen (behind NAT, a port mapping or a proxy): NATS tells the
	// nodes each other's route addresses, and a node connects to those it
	// does not reach yet.
	Advertise string `yaml:"advertise"`
	// SecretFile holds the secret the nodes share (at least 16
	// characters); routes that do not present it are refused.
	SecretFile string `yaml:"secret_file"`
	// TLS makes the routes TLS both ways, each node's certificate signed
	// by the CA; without it the routes stay on loopback addresses.
	TLS *ClusterTLS `yaml:"tls"`
}

// ClusterTLS are a node's certificate and key and the cluster's CA.
type ClusterTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	CAFile   string `yaml:"ca_file"`
}

// Store is the backbone's cluster of c, its secret read from its file.
func (c *ClusterConfig) Store() (*store.Cluster, error) {
	if c == nil {
		return nil, nil
	}
	if c.SecretFile == "" {
		return nil, errors.New("secret_file: required (a secret of 16 characters or more, the same on every node)")
	}
	b, err := os.ReadFile(c.SecretFile)
	if err != nil {
		return nil, fmt.Errorf("secret_file: %w", err)
	}
	sc := &store.Cluster{Name: c.Name, Node: c.Node, Listen: c.Listen, Routes: c.Routes, Advertise: c.Advertise, Secret: strings.TrimSpace(string(b))}
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	if c.TLS != nil {
		if sc.TLS, err = config.MutualTLS(c.TLS.CertFile, c.TLS.KeyFile, c.TLS.CAFile); err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		return sc, nil
	}
	// Without TLS the routes carry the backbone in clear: they stay on
	// this machine.
	for _, a := range append([]string{c.Listen, c.Advertise}, c.Routes...) {
		if host, _, err := net.SplitHostPort(a); err == nil && !isLoopback(host) {
			return nil, fmt.Errorf("%s: routes off this machine need tls (cert_file, key_file, ca_file): without it they stay on loopback addresses (127.0.0.1, ::1, localhost)", a)
		}
	}
	return sc, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
