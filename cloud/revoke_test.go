package cloud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/internal/stuck"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// connection watches one client's connection.
func connected(t *testing.T, c *Cloud, user, pw string) (paho.Client, chan struct{}) {
	t.Helper()
	lost := make(chan struct{})
	o := paho.NewClientOptions().AddBroker("tcp://" + c.Broker.Addr()).SetClientID(user + "-" + fmt.Sprint(time.Now().UnixNano())).
		SetUsername(user).SetPassword(pw).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
		SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
	cl := paho.NewClient(o)
	tok := cl.Connect()
	tok.WaitTimeout(5 * time.Second)
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", user, err)
	}
	t.Cleanup(func() { cl.Disconnect(10) })
	return cl, lost
}

func waitLost(t *testing.T, lost chan struct{}, who string) {
	t.Helper()
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s still connected", who)
	}
}

// TestRevocation: disabling an account, giving it a new password,
// deleting it and revoking an edge node each end the live sessions at
// once, are kept across a restart, and leave the others alone.
func TestRevocation(t *testing.T) {
	opts := Options{DataDir: t.TempDir(), MQTT: BrokerOptions{Listen: "127.0.0.1:0", Users: []MQTTUser{
		{Username: "e1", PasswordHash: mustHash(t, "pw1"), Role: RoleEdge, Group: "g", EdgeID: "e1"},
		{Username: "reader", PasswordHash: mustHash(t, "pwr"), Role: RoleReader},
	}}}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	user2, pw2, err := c.ProvisionEdge(ctx, "g", "e2")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddMQTTUser(ctx, MQTTUser{Username: "mes", PasswordHash: mustHash(t, "mes-password"), Role: RoleCustom, Subscribe: []string{"uns/#"}}); err != nil {
		t.Fatal(err)
	}
	_, readerLost := connected(t, c, "reader", "pwr")

	// Disable a config account: its session ends, it cannot log in.
	_, lost := connected(t, c, "e1", "pw1")
	if err := c.SetMQTTUserDisabled(ctx, "e1", true); err != nil {
		t.Fatal(err)
	}
	waitLost(t, lost, "e1")
	if _, err := dial(t, c, "e1", "pw1"); err == nil {
		t.Fatal("a disabled account logged in")
	}
	// A new password for an API account: the old one stops working.
	_, lost = connected(t, c, user2, pw2)
	pw2b, err := c.RotateMQTTPassword(ctx, user2)
	if err != nil {
		t.Fatal(err)
	}
	waitLost(t, lost, user2)
	if _, err := dial(t, c, user2, pw2); err == nil {
		t.Fatal("the old password still works")
	}
	connected(t, c, user2, pw2b)
	// Deleting: an API account goes, a config account cannot.
	_, lost = connected(t, c, "mes", "mes-password")
	if err := c.DeleteMQTTUser(ctx, "mes"); err != nil {
		t.Fatal(err)
	}
	waitLost(t, lost, "mes")
	if err := c.DeleteMQTTUser(ctx, "reader"); !errors.Is(err, ErrConfigAccount) {
		t.Fatalf("delete a config account: %v", err)
	}
	if err := c.SetMQTTUserDisabled(ctx, "nobody", true); !errors.Is(err, ErrNoAccount) {
		t.Fatalf("disable an unknown account: %v", err)
	}
	select {
	case <-readerLost:
		t.Fatal("another account's session ended")
	default:
	}

	// All of it holds after a restart.
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	c, err = New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stuck.Within(t, time.Minute, "the cloud's shutdown", func() { c.Shutdown(context.Background()) })
	})
	for _, tc := range []struct{ user, pw string }{{"e1", "pw1"}, {user2, pw2}, {"mes", "mes-password"}} {
		if _, err := dial(t, c, tc.user, tc.pw); err == nil {
			t.Errorf("%s logged in after a restart", tc.user)
		}
	}
	e2, lost := connected(t, c, user2, pw2b)
	if err := c.SetMQTTUserDisabled(ctx, "e1", false); err != nil {
		t.Fatal(err)
	}
	connected(t, c, "e1", "pw1")

	// Revoking edge e2: its account goes, its session ends, and the path it
	// defined can be defined by another node.
	f := &foreign{t: t, cl: e2, edge: "e2"}
	ts := uint64(time.Now().UnixMilli())
	f.send(sparkplug.NBIRTH, "", &pb.Payload{Timestamp: proto.Uint64(ts), Metrics: []*pb.Payload_Metric{metric(sparkplug.MetricBdSeq, 0, pb.DataType_Int64, uns.Int(0), ts)}})
	f.send(sparkplug.DBIRTH, "d", &pb.Payload{Timestamp: proto.Uint64(ts), Metrics: []*pb.Payload_Metric{unsMetric("v", 1, "ent/s/a/l/d/v", 1, ts)}})
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if _, ok := c.Registry.Get("ent/s/a/l/d/v"); !ok {
			return errors.New("not defined")
		}
		return nil
	})
	names, err := c.RevokeEdge(ctx, "g", "e2")
	if err != nil || len(names) != 1 || names[0] != user2 {
		t.Fatalf("revoke: %v %v", names, err)
	}
	waitLost(t, lost, "e2")
	if c.Host.knows("g", "e2") {
		t.Fatal("the host still knows e2")
	}
	e1 := bornNode(t, c, "e1", "pw1")
	e1.send(sparkplug.DBIRTH, "d", &pb.Payload{Timestamp: proto.Uint64(ts + 1), Metrics: []*pb.Payload_Metric{unsMetric("v", 1, "ent/s/a/l/d/v", 2, ts+1)}})
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if tag, _ := c.Registry.Get("ent/s/a/l/d/v"); tag.Sparkplug.Edge != "e1" {
			return fmt.Errorf("owner %s", tag.Sparkplug.Edge)
		}
		return nil
	})
}

// A login that passed bcrypt against an old password, and is cached, does
// not let that password in once the account has a new one (a login can
// finish its bcrypt after the rotation cleared the cache).
func TestRotatedPasswordNotCached(t *testing.T) {
	old, fresh := mustHash(t, "old-password"), mustHash(t, "new-password")
	h := newAuthHook([]MQTTUser{{Username: "u", PasswordHash: old, Role: RoleReader}}, slog.New(slog.DiscardHandler), func() {})
	if ok, _ := h.checkPassword("10.0.0.1:1", "u", MQTTUser{Username: "u", PasswordHash: old}, true, []byte("old-password")); !ok {
		t.Fatal("the old password before the rotation")
	}
	h.apply("u", accountState{PasswordHash: fresh})
	u, _ := h.user("u")
	if ok, _ := h.checkPassword("10.0.0.1:1", "u", u, true, []byte("old-password")); ok {
		t.Fatal("the old password let in from the cache after the rotation")
	}
	if ok, _ := h.checkPassword("10.0.0.1:1", "u", u, true, []byte("new-password")); !ok {
		t.Fatal("the new password refused")
	}
}
