package config

import "testing"

func TestBrokerURL(t *testing.T) {
	for in, want := range map[string]string{
		"mqtt://h:1883": "tcp://h:1883", "tcp://h:1883": "tcp://h:1883", "MQTTS://h:8883": "ssl://h:8883",
		"ssl://h:8883": "ssl://h:8883", "tls://10.0.0.1:8883": "ssl://10.0.0.1:8883", "ws://h:80/mqtt": "ws://h:80/mqtt",
		"wss://h:443/mqtt": "wss://h:443/mqtt", "tcp://[::1]:1883": "tcp://[::1]:1883",
	} {
		if got, err := BrokerURL(in); err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"http://h:1883", "h:1883", "tcp://h", "tcp://:1883", "", "mqtt//h:1"} {
		if got, err := BrokerURL(bad); err == nil {
			t.Errorf("%q accepted as %q", bad, got)
		}
	}
}
