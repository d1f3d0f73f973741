package web_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/web/webtest"
)

// BenchmarkNamespace100k: one level of the tree and a search on 100,000
// tags, beside the whole namespace in one answer (what the UI fetched
// before it opened the tree a level at a time).
func BenchmarkNamespace100k(b *testing.B) {
	app := webtest.Start(b, cloud.Options{})
	n := 100_000
	if testing.Short() { // a smoke check of the steps (make test)
		n = 2000
	}
	for i := range n {
		app.Cloud.Registry.Define(uns.Tag{Path: uns.Path(fmt.Sprintf("plant/site%02d/area/line/m%02d/t%03d", i/1000, (i/100)%10, i%100)),
			DataType: uns.TypeFloat64, Unit: "°C", Description: fmt.Sprintf("temperature %d", i%100)})
	}
	admin := app.Admin()
	for _, c := range []struct{ name, path string }{
		{"whole-namespace", "/api/v1/namespace"},
		{"children-of-root", "/api/v1/namespace/children"},
		{"children-of-a-site", fmt.Sprintf("/api/v1/namespace/children?prefix=plant/site%02d", n/2000)},
		{"search-100-found", "/api/v1/namespace/search?q=m07/t042"},
	} {
		b.Run(c.name, func(b *testing.B) {
			var bytes int64
			for b.Loop() {
				req, _ := http.NewRequest("GET", app.Base+c.path, nil)
				req.Header.Set("Authorization", "Bearer "+admin.Token)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					b.Fatalf("%s: %d", c.path, res.StatusCode)
				}
				bytes = n
			}
			b.ReportMetric(float64(bytes), "bytes/answer")
		})
	}
}
