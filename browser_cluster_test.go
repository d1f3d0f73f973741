package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/internal/netcut"
	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/web"
)

// TestBrowserClusterNodes shows the fleet page of a cloud of three nodes
// (in this process): the nodes panel lists the three up, which one runs
// the primary host and the transforms, and, after one node stops, that
// node down; a viewer does not see the panel.
func TestBrowserClusterNodes(t *testing.T) {
	needBrowser(t)
	t.Setenv("CALX_ADMIN_PASSWORD", "test-admin-pw")
	admin, _, _, err := adminUser()
	if err != nil {
		t.Fatal(err)
	}
	viewerHash, err := cloud.HashPassword("viewer-pw-long")
	if err != nil {
		t.Fatal(err)
	}
	users := []web.User{admin, {Username: "viewer", PasswordHash: viewerHash, Role: web.RoleViewer}}
	routes := []string{netcut.FreeAddr(t), netcut.FreeAddr(t), netcut.FreeAddr(t)}
	apps := make([]*cloudApp, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range apps {
		var others []string
		for j, r := range routes {
			if j != i {
				others = append(others, r)
			}
		}
		co := cloud.Options{DataDir: t.TempDir(), MQTT: cloud.BrokerOptions{Listen: "127.0.0.1:0"},
			Cluster: &store.Cluster{Name: "calx-ui", Node: fmt.Sprintf("n%d", i+1), Listen: routes[i], Routes: others,
				Secret: "a-secret-of-the-ui-cluster", Wait: time.Minute}}
		wg.Go(func() {
			apps[i], errs[i] = startCloudApp(context.Background(), co, users, web.Options{Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
	}
	stopped := make([]bool, 3)
	t.Cleanup(func() {
		for i, a := range apps {
			if !stopped[i] {
				a.shutdown(context.Background())
			}
		}
	})

	b := newBrowserSession(t, "http://"+apps[0].web.Addr())
	b.do("sign-in page", chromedp.Navigate(b.base+"/login"))
	b.login("admin", "test-admin-pw", "header.top")
	b.open("/fleet", `#nodes tr[data-node="n3"]`)
	b.waitJS("the jobs on a node", `[...document.querySelectorAll("#nodes tbody tr")].filter(tr => /primary host/.test(tr.textContent)).length === 1 && /transforms and alarms/.test(document.querySelector("#nodes tbody").textContent)`, 30*time.Second)
	if got := eval[string](b, `document.getElementById("nodes-summary").textContent`); got != "3 of 3 nodes up; the backbone keeps 3 copies of each stream. Shown as node n1 sees them." {
		t.Errorf("nodes summary: %q", got)
	}
	if self := eval[string](b, `document.querySelector('#nodes tr[data-node="n1"]').textContent`); !strings.Contains(self, "this node") {
		t.Errorf("n1's row: %q", self)
	}
	b.waitJS("n2's broker and version", `document.querySelector('#nodes tr[data-node="n2"]').textContent.includes(`+fmt.Sprintf("%q", apps[1].cloud.Broker.Addr())+`)`, 10*time.Second)
	b.screenshots("fleet-cluster")

	// The third node stops: the page shows it down (it refreshes every 10 s).
	apps[2].shutdown(context.Background())
	stopped[2] = true
	b.waitJS("n3 down", `/down/.test(document.querySelector('#nodes tr[data-node="n3"]').textContent)`, 40*time.Second)
	if got := eval[string](b, `document.getElementById("nodes-summary").textContent`); !strings.Contains(got, "2 of 3 nodes up") {
		t.Errorf("nodes summary after a node stopped: %q", got)
	}
	b.screenshots("fleet-cluster-node-down")
	b.noErrors("the fleet page of a cluster")

	// A viewer sees the fleet without the nodes.
	v := newBrowserSession(t, "http://"+apps[1].web.Addr())
	v.do("sign-in page", chromedp.Navigate(v.base+"/login"))
	v.login("viewer", "viewer-pw-long", "header.top")
	v.open("/fleet", "#summary")
	time.Sleep(time.Second)
	if !eval[bool](v, `document.getElementById("cloud-nodes").hidden`) {
		t.Error("a viewer sees the cloud's nodes")
	}
	v.noErrors("the fleet page, as a viewer")
}
