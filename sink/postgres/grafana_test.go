package postgres

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// TestGrafanaDashboard runs every query of the example Grafana dashboard
// (examples/grafana) against tables the sink wrote, with Grafana's macros
// and variables put in as Grafana would: each query runs and finds rows.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("../../examples/grafana/calx-postgres.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Templating struct {
			List []struct {
				Name, Type, Query string
			}
		}
		Panels []struct {
			Title   string
			Targets []struct {
				RawSQL string `json:"rawSql"`
			}
		}
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&dash); err != nil {
		t.Fatal(err)
	}
	_, s := startSink(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	var batch []uns.Sample
	for i := range 300 {
		ts := now.Add(-time.Duration(i) * time.Second)
		batch = append(batch,
			uns.Sample{Path: "limeworks/ghent/kilns/line1/kiln1/burning_zone_temp", TS: ts, Value: uns.Float(1100 + float64(i%7)), Quality: uns.Good},
			uns.Sample{Path: "limeworks/ghent/kilns/line1/kiln1/state", TS: ts, Value: uns.Value{Kind: uns.KindString, S: "running"}, Quality: uns.Good})
	}
	if err := s.WriteBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	const tag = "limeworks/ghent/kilns/line1/kiln1/burning_zone_temp"
	timeFilter := regexp.MustCompile(`\$__timeFilter\((\w+)\)`)
	grafana := func(q string) string {
		q = timeFilter.ReplaceAllString(q, "$1 BETWEEN now() - interval '6 hours' AND now()")
		return strings.ReplaceAll(q, "$tag", tag)
	}
	queries := 0
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var n int
		rows, err := s.pool.Query(ctx, grafana(v.Query))
		if err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		for rows.Next() {
			n++
		}
		rows.Close()
		if n != 2 {
			t.Errorf("variable %s: %d tags", v.Name, n)
		}
		queries++
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			rows, err := s.pool.Query(ctx, grafana(tg.RawSQL))
			if err != nil {
				t.Fatalf("panel %q: %v", p.Title, err)
			}
			n := 0
			for rows.Next() {
				n++
			}
			err = rows.Err()
			rows.Close()
			if err != nil || n == 0 {
				t.Errorf("panel %q: %d rows, %v", p.Title, n, err)
			}
			queries++
		}
	}
	if queries < 5 {
		t.Fatalf("%d queries in the dashboard", queries)
	}
}
