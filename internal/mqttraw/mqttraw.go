// Package mqttraw speaks MQTT packet by packet over a connection, for
// tests that act as clients no library would be: a CONNECT asking for a
// session kept forever, a subscription left unread, a packet header that
// announces more than it sends.
package mqttraw

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Session is what a CONNECT asks for.
type Session struct {
	ID, User, Password string
	Version            byte   // 4 (MQTT 3.1.1) when zero, or 5
	Clean              bool   // clean session / clean start
	Expiry             uint32 // MQTT 5 session expiry interval
	Subscribe          string // a filter subscribed to at QoS 1 once connected
}

// Connect sends a CONNECT on c (and the SUBSCRIBE, if the CONNACK
// accepted it) and returns the CONNACK.
func Connect(t testing.TB, c net.Conn, s Session) packets.Packet {
	t.Helper()
	version := s.Version
	if version == 0 {
		version = 4
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: version, Connect: packets.ConnectParams{
		ProtocolName: []byte("MQTT"), Clean: s.Clean, ClientIdentifier: s.ID, Keepalive: 30,
		UsernameFlag: s.User != "", Username: []byte(s.User), PasswordFlag: s.Password != "", Password: []byte(s.Password)}}
	if s.Expiry > 0 {
		pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = s.Expiry, true
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	ack := Read(t, c, version)
	if ack.FixedHeader.Type != packets.Connack {
		t.Fatalf("got packet type %d, want a CONNACK", ack.FixedHeader.Type)
	}
	if s.Subscribe != "" && ack.ReasonCode == 0 {
		sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: version, PacketID: 1,
			Filters: packets.Subscriptions{{Filter: s.Subscribe, Qos: 1}}}
		buf.Reset()
		if err := sub.SubscribeEncode(&buf); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(buf.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	return ack
}

// Publish sends a QoS 0 PUBLISH.
func Publish(t testing.TB, c net.Conn, topic string, payload []byte, retain bool) {
	t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: retain}, TopicName: topic, Payload: payload}
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
}

// Read reads one packet, decoding a CONNACK.
func Read(t testing.TB, c net.Conn, version byte) packets.Packet {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	r := bufio.NewReader(c)
	b, err := r.ReadByte()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var fh packets.FixedHeader
	if err := fh.Decode(b); err != nil {
		t.Fatal(err)
	}
	if fh.Remaining, _, err = packets.DecodeLength(r); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, fh.Remaining)
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatal(err)
	}
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: version}
	if fh.Type == packets.Connack {
		if err := pk.ConnackDecode(body); err != nil {
			t.Fatal(err)
		}
	}
	return pk
}

// ClosedWithin says whether the other end closed c within d (what it sent
// before is read and dropped).
func ClosedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	var b [512]byte
	for {
		_, err := c.Read(b[:])
		if err == nil {
			continue
		}
		ne, ok := err.(net.Error)
		return !(ok && ne.Timeout())
	}
}
