package web_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/web/webtest"
)

// TestHistoryAPI: raw points with paging, aggregates aligned across paths,
// chart downsampling, CSV, latest values of a subtree, and a JSON 400 that
// names the parameter for every bad request.
func TestHistoryAPI(t *testing.T) {
	app := webtest.Start(t, cloud.Options{})
	ctx := context.Background()
	a, b, st := uns.Path("ent/site/area/line/m1/a"), uns.Path("ent/site/area/line/m1/b"), uns.Path("ent/site/area/line/m1/state")
	tags := []uns.Tag{{Path: a, DataType: uns.TypeFloat64, Unit: "°C"}, {Path: b, DataType: uns.TypeInt64}, {Path: st, DataType: uns.TypeString}}
	if err := app.Cloud.Historian.UpsertTags(ctx, tags); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var samples []uns.Sample
	for i := range 120 { // a: i every second; b: 2*i every two seconds
		samples = append(samples, uns.Sample{Path: a, TS: t0.Add(time.Duration(i) * time.Second), Value: uns.Float(float64(i))})
		if i%2 == 0 {
			samples = append(samples, uns.Sample{Path: b, TS: t0.Add(time.Duration(i) * time.Second), Value: uns.Int(int64(2 * i))})
		}
	}
	samples = append(samples, uns.Sample{Path: st, TS: t0, Value: uns.String("running")})
	if err := app.Cloud.Historian.WriteBatch(ctx, samples); err != nil {
		t.Fatal(err)
	}
	for _, tag := range tags {
		app.Cloud.Registry.Define(tag)
	}
	app.Cloud.Registry.Update(samples)
	c := app.Admin()
	from, to := t0.Format(time.RFC3339), t0.Add(time.Minute).Format(time.RFC3339)
	q := func(kv ...string) string {
		v := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Add(kv[i], kv[i+1])
		}
		return "/api/v1/history?" + v.Encode()
	}

	// Raw, paged.
	code, out := c.Do("GET", q("path", string(a), "from", from, "to", to, "limit", "40"), nil)
	if code != 200 || out["count"] != 40.0 || out["truncated"] != true || out["next"] == nil || out["unit"] != "°C" {
		t.Fatalf("page 1: %d %v %v", code, out["count"], out["unit"])
	}
	code, out = c.Do("GET", q("path", string(a), "from", from, "to", to, "limit", "40", "after", out["next"].(string)), nil)
	if pts := out["points"].([]any); code != 200 || len(pts) != 21 || pts[0].(map[string]any)["value"] != 40.0 || out["truncated"] != false {
		t.Fatalf("page 2: %d %v", code, out["count"])
	}

	// Aggregates of two paths on the same buckets.
	code, out = c.Do("GET", q("path", string(a), "path", string(b), "from", from, "to", to, "agg", "avg", "interval", "30s"), nil)
	if code != 200 {
		t.Fatalf("agg: %d %v", code, out)
	}
	bs := out["buckets"].([]any)
	got := fmt.Sprint(bs[0].(map[string]any)["values"], bs[1].(map[string]any)["values"])
	if len(bs) != 2 || got != "[14.5 28] [44.5 88]" {
		t.Fatalf("avg buckets %s", got)
	}
	if units := fmt.Sprintf("%q", out["units"]); units != `["°C" ""]` {
		t.Errorf("the aggregates' units: %s", units)
	}

	// Downsampled for a chart.
	code, out = c.Do("GET", q("path", string(a), "from", from, "to", to, "points", "10"), nil)
	if pts, _ := out["points"].([]any); code != 200 || len(pts) > 10 || len(pts) < 8 || pts[0].(map[string]any)["value"] != 0.0 {
		t.Fatalf("points: %d %v", code, out)
	}

	// CSV.
	req, _ := http.NewRequest("GET", c.Base+q("path", string(a), "path", string(b), "from", from, "to", to, "agg", "max", "interval", "30s", "format", "csv"), nil)
	req.Header.Set("Authorization", "Bearer "+c.Token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	want := "ts," + string(a) + "," + string(b) + "\n2026-03-01T00:00:00Z,29,56\n2026-03-01T00:00:30Z,59,116\n"
	if res.Header.Get("Content-Type") != "text/csv; charset=utf-8" || string(body) != want {
		t.Fatalf("csv %q:\n%s", res.Header.Get("Content-Type"), body)
	}

	// Parquet of the raw points, read back with DuckDB.
	req, _ = http.NewRequest("GET", c.Base+q("path", string(a), "path", string(b), "from", from, "to", to, "format", "parquet"), nil)
	req.Header.Set("Authorization", "Bearer "+c.Token)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !bytes.HasPrefix(body, []byte("PAR1")) {
		t.Fatalf("parquet: %d %q", res.StatusCode, body[:min(len(body), 100)])
	}
	pq := filepath.Join(t.TempDir(), "h.parquet")
	if err := os.WriteFile(pq, body, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	var top float64
	if err := db.QueryRow(`SELECT count(*), max(value) FROM read_parquet('`+pq+`')`).Scan(&n, &top); err != nil || n != 61+31 || top != 120 {
		t.Fatalf("parquet holds %d points, max %v: %v", n, top, err)
	}

	// Latest values of a subtree.
	code, out = c.Do("GET", "/api/v1/latest?prefix=ent/site/area/line/m1", nil)
	if code != 200 || out["count"] != 3.0 {
		t.Fatalf("latest: %d %v", code, out)
	}

	for name, tc := range map[string]struct{ query, want string }{
		"no path":          {q("from", from), "path: required"},
		"bad path":         {q("path", "a/+/b"), "path:"},
		"bad time":         {q("path", string(a), "from", "yesterday"), "from:"},
		"from after to":    {q("path", string(a), "from", to, "to", from), "from: must not be after to"},
		"too long":         {q("path", string(a), "from", "2020-01-01T00:00:00Z", "to", to), "longer than the limit"},
		"bad agg":          {q("path", string(a), "agg", "median", "interval", "1m"), "agg:"},
		"agg no interval":  {q("path", string(a), "agg", "avg"), "interval: required"},
		"bad interval":     {q("path", string(a), "agg", "avg", "interval", "soon"), "interval:"},
		"too many buckets": {q("path", string(a), "from", from, "to", t0.Add(300*24*time.Hour).Format(time.RFC3339), "agg", "avg", "interval", "1s"), "more than the limit"},
		"interval alone":   {q("path", string(a), "interval", "1m"), "interval: only with agg"},
		"string avg":       {q("path", string(st), "from", from, "to", to, "agg", "avg", "interval", "1m"), "string tag"},
		"bad points":       {q("path", string(a), "points", "1"), "points:"},
		"points and agg":   {q("path", string(a), "points", "100", "agg", "avg", "interval", "1m"), "points: not with agg"},
		"bad limit":        {q("path", string(a), "limit", "0"), "limit:"},
		"bad format":       {q("path", string(a), "format", "xml"), "format:"},
		"parquet of agg":   {q("path", string(a), "format", "parquet", "agg", "avg", "interval", "1m"), "format: parquet is for raw points"},
		"bad prefix":       {"/api/v1/latest?prefix=a//b", "prefix:"},
	} {
		code, out := c.Do("GET", tc.query, nil)
		if msg, _ := out["error"].(string); code != 400 || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: %d %v, want 400 with %q", name, code, out, tc.want)
		}
	}
	code, out = c.Do("POST", "/api/v1/sql", map[string]any{"query": "SELECT count(*) AS n FROM points", "limit": 5})
	if rows, _ := out["rows"].([]any); code != 200 || len(rows) != 1 || rows[0].([]any)[0] != 181.0 {
		t.Fatalf("sql: %d %v", code, out)
	}
	if code, out := c.Do("POST", "/api/v1/sql", map[string]any{"query": "DELETE FROM points"}); code != 400 || !strings.Contains(out["error"].(string), "only SELECT") {
		t.Fatalf("sql delete: %d %v", code, out)
	}
	// A file on the cloud's disk stays out of reach, however the query
	// names it.
	secret := filepath.Join(t.TempDir(), "secret.csv")
	if err := os.WriteFile(secret, []byte("k,v\nkey,s3cr3t-4711\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, query := range []string{
		`SELECT b.* FROM (WITH "` + secret + `" AS (SELECT 1) SELECT 1) a, '` + secret + `' b`,
		`SELECT * FROM '` + filepath.Dir(secret) + `/*.csv'`,
	} {
		code, out := c.Do("POST", "/api/v1/sql", map[string]any{"query": query})
		if msg, _ := out["error"].(string); code != 400 || strings.Contains(fmt.Sprint(out), "s3cr3t") || !strings.HasPrefix(msg, "query:") {
			t.Fatalf("sql reading a file: %d %v", code, out)
		}
	}
	if code, out := c.Do("POST", "/api/v1/sql", map[string]any{"query": "SELECT 1", "limit": 1000000}); code != 400 {
		t.Fatalf("sql huge limit: %d %v", code, out)
	}
	if code, out := c.Do("GET", q("path", "ent/site/area/line/m1/none"), nil); code != 404 {
		t.Errorf("unknown tag: %d %v", code, out)
	}
}
