package web

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/time/rate"
)

// Resources of the MCP server: the namespace a level at a time, the
// machine templates and the sites, read through the API as the tools are.
const (
	mcpNamespaceURI = "calx://namespace"
	mcpTemplatesURI = "calx://templates"
	mcpSitesURI     = "calx://sites"
)

func (s *Server) addMCPResources(srv *mcp.Server) {
	read := func(route string, query func(uri string) (url.Values, error)) mcp.ResourceHandler {
		return func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			uri := req.Params.URI
			q, err := query(uri)
			if err != nil {
				return nil, err
			}
			code, body := s.mcpAPI(ctx, req.Extra, "mcp resource "+uri, http.MethodGet, route, q, nil)
			switch {
			case code == http.StatusNotFound:
				return nil, mcp.ResourceNotFoundError(uri)
			case code >= 400:
				return nil, fmt.Errorf("%s: %s (HTTP %d)", uri, apiErrorText(code, body), code)
			}
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, MIMEType: "application/json", Text: string(body)}}}, nil
		}
	}
	none := func(string) (url.Values, error) { return nil, nil }
	srv.AddResource(&mcp.Resource{URI: mcpSitesURI, Name: "sites", Title: "Sites and machines", MIMEType: "application/json",
		Description: "The plant's sites with their machines."}, read("/api/v1/sites", none))
	srv.AddResource(&mcp.Resource{URI: mcpTemplatesURI, Name: "templates", Title: "Machine templates", MIMEType: "application/json",
		Description: "The machine templates of the fleet config: each one's tags, units and derived values."}, read("/api/v1/templates", none))
	srv.AddResource(&mcp.Resource{URI: mcpNamespaceURI, Name: "namespace", Title: "The Unified Namespace", MIMEType: "application/json",
		Description: "The top of the Unified Namespace; calx://namespace/<path> for the children of a path."}, read("/api/v1/namespace/children", none))
	srv.AddResourceTemplate(&mcp.ResourceTemplate{URITemplate: mcpNamespaceURI + "/{+path}", Name: "namespace-path", Title: "A level of the namespace",
		MIMEType: "application/json", Description: "The children of a UNS path: folders with their tag counts, tags with their latest value."},
		read("/api/v1/namespace/children", func(uri string) (url.Values, error) {
			p := strings.TrimPrefix(uri, mcpNamespaceURI+"/")
			if p == uri || p == "" {
				return nil, mcp.ResourceNotFoundError(uri)
			}
			return url.Values{"prefix": {p}}, nil
		}))
}

// mcpPrompt is a question users ask again and again, with its arguments.
type mcpPrompt struct {
	name, title, description string
	args                     []*mcp.PromptArgument
	text                     func(args map[string]string) string
}

var mcpPrompts = []mcpPrompt{
	{"shift_handover", "Shift handover", "A handover summary of a site's last shift.",
		[]*mcp.PromptArgument{{Name: "site", Description: "the site's UNS path, such as limeworks/ghent", Required: true},
			{Name: "hours", Description: "the shift's length in hours (default 8)"}},
		func(a map[string]string) string {
			h := cmp.Or(a["hours"], "8")
			return fmt.Sprintf(`Prepare the shift handover for the site %[1]s, covering the last %[2]s hours until now.
1. list_sites: the machines of %[1]s.
2. latest_values with prefix %[1]s: which machines run, and any value of bad quality.
3. active_alarms with device %[1]s: the alarms still active or unacknowledged, by priority.
4. alarm_journal with alarm %[1]s and from %[2]s hours ago: what was raised, acknowledged and cleared.
5. cycles of each machine over the shift, and fleet_health for the site's edges.
Write a short handover: what runs and what stopped, the open alarms first (priority, since when), what happened during the shift in time order, and what the next shift should watch. Give every value with its unit and every time with its zone.`, a["site"], h)
		}},
	{"energy_per_cycle_week", "Energy per cycle, week over week", "This week's energy per cycle of a machine against last week's.",
		[]*mcp.PromptArgument{{Name: "machine", Description: "the machine's UNS path", Required: true}},
		func(a map[string]string) string {
			return fmt.Sprintf(`Compare the energy per cycle of %[1]s this week with last week.
1. cycles with machine %[1]s, from 7 days ago to now; then from 14 days ago to 7 days ago.
2. For each week: the number of cycles, the average, lowest and highest energy per cycle, and the total.
3. If the energy per cycle changed by more than 5 %%, look at history of the machine's main process values (search_namespace for its temperatures and fuel) over both weeks, aggregated per day, for a likely cause.
Answer with a small table of the two weeks, the change in percent, and the likely cause if there is one, with units.`, a["machine"])
		}},
	{"alarm_flood_review", "Alarm flood review", "A review of alarm floods and nuisance alarms under a prefix, as ISA-18.2 asks.",
		[]*mcp.PromptArgument{{Name: "prefix", Description: "a UNS prefix, such as limeworks/ghent", Required: true},
			{Name: "days", Description: "how many days back (default 7)"}},
		func(a map[string]string) string {
			d := cmp.Or(a["days"], "7")
			return fmt.Sprintf(`Review the alarm system under %[1]s over the last %[2]s days, as ISA-18.2 asks.
1. alarm_statistics with alarm %[1]s over that range: alarms per 10 minutes, floods (more than 10 in 10 minutes), the share of time in flood, chattering and stale alarms, and the most frequent alarms.
2. alarm_journal for the worst flood: which alarm came first, and which followed it.
Recommend, for the most frequent and chattering alarms, a change each (deadband, delay, priority, or removal), and say which flood has one root cause.`, a["prefix"], d)
		}},
}

func addMCPPrompts(srv *mcp.Server) {
	for _, p := range mcpPrompts {
		srv.AddPrompt(&mcp.Prompt{Name: p.name, Title: p.title, Description: p.description, Arguments: p.args},
			func(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
				for _, a := range p.args {
					if a.Required && req.Params.Arguments[a.Name] == "" {
						return nil, fmt.Errorf("prompt %s: argument %s is required (%s)", p.name, a.Name, a.Description)
					}
				}
				return &mcp.GetPromptResult{Description: p.description, Messages: []*mcp.PromptMessage{
					{Role: "user", Content: &mcp.TextContent{Text: p.text(req.Params.Arguments)}}}}, nil
			})
	}
}

// The rate of MCP calls each user may make by default: assistants loop,
// and every call reads the historian.
const (
	defaultMCPRate  = 20.0
	defaultMCPBurst = 40
)

// userRates keeps a token bucket per user.
type userRates struct {
	rate    float64
	burst   int
	mu      sync.Mutex
	buckets map[string]*userBucket
}

type userBucket struct {
	l    *rate.Limiter
	used time.Time
}

func (u *userRates) allow(user string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := time.Now()
	if u.buckets == nil {
		u.buckets = map[string]*userBucket{}
	}
	b := u.buckets[user]
	if b == nil {
		// Buckets idle for long are forgotten, so that the map stays small.
		for k, o := range u.buckets {
			if now.Sub(o.used) > time.Minute {
				delete(u.buckets, k)
			}
		}
		b = &userBucket{l: rate.NewLimiter(rate.Limit(u.rate), u.burst)}
		u.buckets[user] = b
	}
	b.used = now
	return b.l.AllowN(now, 1)
}
