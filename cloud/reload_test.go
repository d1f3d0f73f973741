package cloud

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/calx-iiot/calx/edge/edgetest"
)

// A reloaded config file takes new passwords, ACLs and removals at once:
// the sessions of changed accounts end, the old password stops working,
// unchanged accounts stay connected, and accounts of the API are kept.
func TestReloadMQTTUsers(t *testing.T) {
	c := startCloud(t)
	ctx := context.Background()
	if err := c.AddMQTTUser(ctx, MQTTUser{Username: "api-reader", PasswordHash: mustHash(t, "pw-api"), Role: RoleReader}); err != nil {
		t.Fatal(err)
	}
	// A password the API rotated before is replaced by the file's new one.
	rotated, err := c.RotateMQTTPassword(ctx, "e1")
	if err != nil {
		t.Fatal(err)
	}
	var conns []interface{ IsConnectionOpen() bool }
	for _, l := range [][2]string{{"e1", rotated}, {"e2", "pw2"}, {"reader", "pwr"}} {
		cl, err := dial(t, c, l[0], l[1])
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, cl)
	}
	e1, e2, reader := conns[0], conns[1], conns[2]
	changed, err := c.ReloadMQTTUsers(ctx, []MQTTUser{
		{Username: "e1", PasswordHash: mustHash(t, "pw1-new"), Role: RoleEdge, Group: "g", EdgeID: "e1"},
		{Username: "e2", PasswordHash: mustHash(t, "pw2"), Role: RoleEdge, Group: "g", EdgeID: "e2"},
		{Username: "hmi", PasswordHash: mustHash(t, "pw-hmi"), Role: RoleReader, Scope: []string{"ent/ghent"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"e1", "hmi", "reader"}; !slices.Equal(changed, want) {
		t.Errorf("changed %v, want %v", changed, want)
	}
	edgetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if e1.IsConnectionOpen() || reader.IsConnectionOpen() {
			return errors.New("e1 (new password) or reader (removed) still connected")
		}
		return nil
	})
	if !e2.IsConnectionOpen() {
		t.Error("e2, unchanged, was disconnected")
	}
	for _, l := range []struct {
		user, pw string
		ok       bool
	}{{"e1", "pw1", false}, {"e1", rotated, false}, {"e1", "pw1-new", true}, {"reader", "pwr", false}, {"hmi", "pw-hmi", true}, {"api-reader", "pw-api", true}} {
		if _, err := dial(t, c, l.user, l.pw); (err == nil) != l.ok {
			t.Errorf("%s/%s: %v, want ok %t", l.user, l.pw, err, l.ok)
		}
	}
	// Refused whole: an account of the API's name, a bad one.
	for _, bad := range [][]MQTTUser{
		{{Username: "api-reader", PasswordHash: mustHash(t, "x"), Role: RoleReader}},
		{{Username: "e2", PasswordHash: "plain", Role: RoleEdge, Group: "g", EdgeID: "e2"}},
	} {
		if _, err := c.ReloadMQTTUsers(ctx, bad); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
	if _, err := dial(t, c, "e2", "pw2"); err != nil {
		t.Errorf("e2 after refused reloads: %v", err)
	}
	// A restart reads the file's password, not the rotated one.
	if st := c.currentState(ctx, "e1"); st.PasswordHash != "" {
		t.Error("the rotated password is still stored")
	}
}
