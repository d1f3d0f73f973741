package postgres_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/edge/sim"
	"github.com/calx-iiot/calx/internal/pgtest"
	"github.com/calx-iiot/calx/sink/postgres"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/web/webtest"
)

// TestCloudToPostgres runs a cloud with a PostgreSQL sink and an edge: the
// database gets every value the historian gets, and, stopped for a while,
// gets the backlog when it is back; a cloud restarted on its data writes
// nothing twice.
func TestCloudToPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	dir := t.TempDir()
	hash, _ := cloud.HashPassword("edge-pw")
	open := func() *webtest.App {
		sk, err := postgres.Open(postgres.Options{URL: pg.URL()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sk.Close)
		return webtest.Start(t, cloud.Options{DataDir: filepath.Join(dir, "cloud"), Sinks: []cloud.Sink{{Name: "warehouse", Writer: sk}},
			MQTT: cloud.BrokerOptions{Listen: "127.0.0.1:0", Users: []cloud.MQTTUser{{Username: "e", PasswordHash: hash, Role: cloud.RoleEdge, Group: "g", EdgeID: "e"}}}})
	}
	app := open()
	kiln, _ := sim.New("k", sim.Settings{Interval: 20 * time.Millisecond, StartHot: true})
	e := edgetest.Start(t, edge.Options{Broker: "tcp://" + app.Cloud.Broker.Addr(), Username: "e", Password: "edge-pw", Group: "g", EdgeID: "e",
		PrimaryHost: "calx", DataDir: filepath.Join(dir, "edge"),
		Devices: []edge.Device{{ID: "kiln", Path: "ent/site/area/line/kiln", Connector: kiln}}})
	life := uns.Path("ent/site/area/line/kiln/" + sim.TagLife)
	ctx := context.Background()
	db, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	inPG := func() (int64, error) {
		var n int64
		err := db.QueryRow(ctx, `SELECT count(*) FROM calx.tag_values WHERE path = $1`, string(life)).Scan(&n)
		return n, err
	}
	same := func(a *webtest.App, atLeast int64) {
		t.Helper()
		edgetest.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
			h, err := a.Cloud.Historian.Count(ctx, life)
			if err != nil {
				return err
			}
			p, err := inPG()
			if err != nil {
				return err
			}
			if h < atLeast || p != h {
				return fmt.Errorf("historian %d, PostgreSQL %d values of the life counter", h, p)
			}
			return nil
		})
	}
	same(app, 50)

	// The database goes away for a while; the values keep coming.
	pg.Stop()
	down, _ := app.Cloud.Historian.Count(ctx, life)
	edgetest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if n, _ := app.Cloud.Historian.Count(ctx, life); n < down+100 {
			return fmt.Errorf("%d values since the database stopped", n-down)
		}
		for _, s := range app.Cloud.SinkStats() {
			if s.Failures == 0 || s.LastError == "" {
				return fmt.Errorf("the sink does not say it fails: %+v", s)
			}
		}
		return nil
	})
	pg.Start()
	db.Close(ctx)
	if db, err = pgx.Connect(ctx, pg.URL()); err != nil {
		t.Fatal(err)
	}
	same(app, down+100)
	if s := app.Cloud.SinkStats()[0]; s.LastError != "" || !s.Running {
		t.Fatalf("the sink after the database came back: %+v", s)
	}

	// The cloud restarts on its data: what it writes again is not doubled.
	e.Shutdown(ctx)
	if err := app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	app = open()
	same(app, down+100)
	var dups int64
	if err := db.QueryRow(ctx, `SELECT count(*) - count(DISTINCT (tag_id, ts)) FROM calx.points`).Scan(&dups); err != nil || dups != 0 {
		t.Fatalf("%d duplicates: %v", dups, err)
	}
}
