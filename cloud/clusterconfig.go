package cloud

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

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
type ClusterConfig struct {
	Name   string   `yaml:"name"`
	Node   string   `yaml:"node"`
	Listen string   `yaml:"listen"`
	Routes []string `yaml:"routes"`
	// SecretFile holds the secret the nodes share (at least 16
	// characters); routes that do not present it are refused.
	SecretFile string `yaml:"secret_file"`
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
	sc := &store.Cluster{Name: c.Name, Node: c.Node, Listen: c.Listen, Routes: c.Routes, Secret: strings.TrimSpace(string(b))}
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	// Routes carry the backbone in clear for now: they stay on this machine
	// until they speak TLS.
	for _, a := range append([]string{c.Listen}, c.Routes...) {
		if host, _, err := net.SplitHostPort(a); err == nil && !isLoopback(host) {
			return nil, fmt.Errorf("%s: the routes between nodes do not speak TLS yet, so they stay on loopback addresses (127.0.0.1, ::1, localhost)", a)
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
