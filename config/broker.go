package config

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// BrokerURL reads an MQTT broker address as users write it, with any of
// the schemes they use (mqtt:// and tcp://; mqtts://, ssl:// and tls://
// for TLS; ws:// and wss:// for WebSocket), and returns it in the form the
// MQTT client takes (tcp, ssl, ws or wss), or says what is wrong with it.
func BrokerURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("broker %q: %v", s, err)
	}
	scheme, ok := map[string]string{"mqtt": "tcp", "tcp": "tcp", "mqtts": "ssl", "ssl": "ssl", "tls": "ssl", "ws": "ws", "wss": "wss"}[strings.ToLower(u.Scheme)]
	if !ok {
		return "", fmt.Errorf("broker %q: want mqtt://, tcp://, mqtts://, ssl://, tls://, ws:// or wss:// and host:port", s)
	}
	if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" || u.Hostname() == "" {
		return "", fmt.Errorf("broker %q: want host:port after the scheme", s)
	}
	u.Scheme = scheme
	return u.String(), nil
}
