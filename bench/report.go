package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// Print writes the result as a table for people.
func (r *Result) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	var fleets []string
	for _, f := range r.Fleets {
		fleets = append(fleets, fmt.Sprintf("%s: %d edges x %d tags at %g Hz, %g%% changing", f.Group, f.Edges, f.TagsPerEdge, f.Rate, 100*f.ChangeRatio))
	}
	fmt.Fprintf(tw, "scenario\t%s\n", strings.Join(fleets, "; "))
	fmt.Fprintf(tw, "offered\t%s values/s from %d edges, %d tags; measured over %.1f s\n\n", num(r.Offered), r.Edges, r.Tags, r.Window)
	fmt.Fprintf(tw, "stage\tvalues/s\tmessages/s\n")
	for _, s := range []struct {
		name string
		r    Rate
	}{{"sent by the edges", r.Sent}, {"accepted by the broker", r.Broker}, {"persisted by the backbone", r.Backbone},
		{"decoded by the host", r.Host}, {"committed to the historian", r.Historian},
		{fmt.Sprintf("received from the live API (%d edges followed)", r.LiveEdges), r.Live}} {
		msgs := ""
		if s.r.MsgsPerSec > 0 {
			msgs = num(s.r.MsgsPerSec)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.name, num(s.r.ValuesPerSec), msgs)
	}
	fmt.Fprintf(tw, "\nlatency\tp50\tp99\tmax\n")
	maxH := ms(r.ToHistorian.Max)
	if r.ToHistorian.MaxIsBound {
		maxH = "<= " + maxH
	}
	fmt.Fprintf(tw, "sample to historian commit\t%s\t%s\t%s\n", ms(r.ToHistorian.P50), ms(r.ToHistorian.P99), maxH)
	fmt.Fprintf(tw, "sample to live API\t%s\t%s\t%s\n\n", ms(r.ToLive.P50), ms(r.ToLive.P99), ms(r.ToLive.Max))
	fmt.Fprintf(tw, "CPU\t%.2f cores (%s)\n", r.CPUCores, r.CPUIncludes)
	fmt.Fprintf(tw, "peak RSS\t%.0f MiB\n", r.PeakRSSMiB)
	var lags []string
	for k, v := range r.MaxLag {
		lags = append(lags, fmt.Sprintf("%s %.0f", k, v))
	}
	slices.Sort(lags)
	fmt.Fprintf(tw, "max consumer lag\t%s messages\n", strings.Join(lags, ", "))
	fmt.Fprintf(tw, "values sent / stored\t%d / %d (the last stored %.1f s after the edges stopped)\n", r.ValuesSent+r.Unacked, r.ValuesStored, r.DrainSeconds)
	fmt.Fprintf(tw, "dropped\t%d\n", r.Dropped)
	if r.LiveDropped > 0 || r.FeedsDropped > 0 {
		fmt.Fprintf(tw, "not kept up with, off the durable path\t%.0f values to live views, %.0f backbone messages to the live feed and UNS JSON\n", r.LiveDropped, r.FeedsDropped)
	}
	if r.BareAppender > 0 {
		fmt.Fprintf(tw, "\nbare DuckDB appender\t%s values/s; historian at %.0f %% of it\n", num(r.BareAppender), 100*r.HistorianRatio)
		fmt.Fprintf(tw, "bare JetStream publish\t%s values/s; backbone at %.0f %% of it\n", num(r.BarePublish), 100*r.BackboneRatio)
		if r.CatchUpSeconds > 0 {
			fmt.Fprintf(tw, "historian catch-up\t%s values/s over the %.1f s backlog after the edges stopped; %.0f %% of the bare appender\n",
				num(r.CatchUp.ValuesPerSec), r.CatchUpSeconds, 100*r.CatchUpRatio)
		}
	}
	tw.Flush()
}

func num(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	s := fmt.Sprintf("%.0f", v)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func ms(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case math.IsInf(v, 1):
		return "beyond the histogram"
	case v < 10:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.0f ms", v)
}
