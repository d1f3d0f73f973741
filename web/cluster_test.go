package web_test

import (
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/internal/netcut"
	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/web/webtest"
)

// twoNodes starts two clouds with their APIs as the nodes of one cluster.
func twoNodes(t *testing.T) [2]*webtest.App {
	routes := []string{netcut.FreeAddr(t), netcut.FreeAddr(t)}
	var apps [2]*webtest.App
	var wg sync.WaitGroup
	for i := range apps {
		co := cloud.Options{Cluster: &store.Cluster{Name: "calx-web", Node: fmt.Sprintf("n%d", i+1), Listen: routes[i], Routes: []string{routes[1-i]},
			Secret: "a-secret-of-the-web-cluster", Wait: time.Minute}}
		wg.Go(func() { apps[i] = webtest.Start(t, co) })
	}
	wg.Wait()
	if apps[0] == nil || apps[1] == nil {
		t.FailNow()
	}
	return apps
}

// A user or an API token made, changed or removed through one node's API
// holds on the other's within seconds.
func TestClusterUsersAndTokens(t *testing.T) {
	apps := twoNodes(t)
	a1 := webtest.Login(t, apps[0].Base, "admin", webtest.AdminPassword)
	a2 := webtest.Login(t, apps[1].Base, "admin", webtest.AdminPassword)
	login := func(base, user, pw string) int {
		c := &webtest.Client{T: t, Base: base}
		code, _ := c.Do("POST", "/api/v1/login", map[string]string{"username": user, "password": pw})
		return code
	}
	within := func(what string, ok func() bool) {
		t.Helper()
		edgetest.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
			if !ok() {
				return fmt.Errorf("not yet: %s", what)
			}
			return nil
		})
	}
	if code, out := a1.Do("POST", "/api/v1/users", map[string]any{"username": "ops", "password": "first-password-1", "role": "viewer"}); code != 201 {
		t.Fatalf("create user: %d %v", code, out)
	}
	// Sign-ins are tried once each: failed ones lock a name out.
	listed := func(c *webtest.Client, name string) bool {
		_, out := c.Do("GET", "/api/v1/users", nil)
		users, _ := out["users"].([]any)
		for _, u := range users {
			if m, _ := u.(map[string]any); m["username"] == name {
				return true
			}
		}
		return false
	}
	within("the user made on n1 listed on n2", func() bool { return listed(a2, "ops") })
	ops2 := webtest.Login(t, apps[1].Base, "ops", "first-password-1")
	if code, out := a1.Do("PATCH", "/api/v1/users/ops", map[string]any{"password": "second-password-2"}); code != 200 {
		t.Fatalf("change password: %d %v", code, out)
	}
	within("the session on n2 of the user whose password changed on n1 ended", func() bool {
		c, _ := ops2.Do("GET", "/api/v1/namespace", nil)
		return c == 401
	})
	if login(apps[1].Base, "ops", "first-password-1") != 401 || login(apps[1].Base, "ops", "second-password-2") != 200 {
		t.Error("n2 does not take the password changed on n1")
	}

	code, out := a2.Do("POST", "/api/v1/tokens", map[string]any{"name": "grafana", "role": "viewer"})
	if code != 201 {
		t.Fatalf("create token: %d %v", code, out)
	}
	tok := &webtest.Client{T: t, Base: apps[0].Base, Token: out["token"].(string)}
	within("the token made on n2 works on n1", func() bool { c, _ := tok.Do("GET", "/api/v1/namespace", nil); return c == 200 })
	if code, _ := a1.Do("DELETE", "/api/v1/tokens/"+url.PathEscape(out["id"].(string)), nil); code != 200 {
		t.Fatalf("delete token: %d", code)
	}
	tok.Base = apps[1].Base
	within("the token deleted on n1 refused on n2", func() bool { c, _ := tok.Do("GET", "/api/v1/namespace", nil); return c == 401 })

	if code, _ := a2.Do("DELETE", "/api/v1/users/ops", nil); code != 200 {
		t.Fatalf("delete user: %d", code)
	}
	within("the user deleted on n2 gone from n1", func() bool { return !listed(a1, "ops") })
	if login(apps[0].Base, "ops", "second-password-2") != 401 {
		t.Error("the user deleted on n2 signs in on n1")
	}
}
