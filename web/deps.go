package web

import (
	"context"
	"io"
	"os"
	"time"

	"github.com/calx-iiot/calx/release"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/store/historian"
	"github.com/calx-iiot/calx/transform"
	"github.com/calx-iiot/calx/uns"
)

// What the handlers need of the cloud, as small interfaces: each is one
// concern of the API, and each is satisfied by one of the cloud's parts
// (New takes them from a started *cloud.Cloud). The handlers see nothing
// else of it; only /metrics reads the whole cloud's figures.

// historyReader reads the historian: values, aggregates, exports, SQL,
// cycles, the alarm journal and its statistics, and reports.
type historyReader interface {
	History(ctx context.Context, p uns.Path, from, to time.Time, limit int) ([]historian.Point, error)
	Aggregate(ctx context.Context, p uns.Path, from, to time.Time, interval time.Duration, agg string) ([]historian.Bucket, error)
	Downsample(ctx context.Context, p uns.Path, from, to time.Time, n int) ([]historian.Point, error)
	Known(p uns.Path) bool
	Query(ctx context.Context, q string, opts historian.QueryOptions) (*historian.QueryResult, error)
	ExportParquet(ctx context.Context, paths []uns.Path, from, to time.Time, maxPoints int64) (*os.File, int64, error)
	Cycles(ctx context.Context, q historian.CycleQuery) ([]uns.Cycle, error)
	Journal(ctx context.Context, q historian.JournalQuery) ([]uns.Transition, error)
	AlarmStats(ctx context.Context, q historian.AlarmStatsQuery) (historian.AlarmStats, error)
	Exceedances(ctx context.Context, class string, day time.Time) (historian.ExceedanceReport, error)
}

// auditTrail keeps and lists who did what.
type auditTrail interface {
	Audit(ctx context.Context, e historian.AuditEntry) error
	AuditLog(ctx context.Context, limit int) ([]historian.AuditEntry, error)
}

// tagDirectory is the namespace: every tag with its latest value.
type tagDirectory interface {
	Get(p uns.Path) (cloud.TagState, bool)
	List(prefix string) []cloud.TagState
	Scan(prefix string, f func(t *cloud.TagState))
}

// liveFeed hands out subscriptions to values and alarm transitions as
// they come.
type liveFeed interface {
	Subscribe(prefixes ...string) *cloud.LiveSub
	Unsubscribe(s *cloud.LiveSub)
}

// alarmDesk lists the alarms and takes an operator's acknowledgement or
// shelving.
type alarmDesk interface {
	Alarms(ctx context.Context) ([]transform.AlarmStatus, error)
	AckAlarm(ctx context.Context, path, user, comment string) (transform.Transition, error)
	ShelveAlarm(ctx context.Context, path string, until time.Time, user, comment string) (transform.Transition, error)
}

// tagWriter sends a value to a writable tag's device.
type tagWriter interface {
	Write(path uns.Path, v uns.Value) error
}

// fleetConfig is the versioned fleet configuration and its rollouts.
type fleetConfig interface {
	Head(ctx context.Context) (uint64, error)
	GetRedacted(ctx context.Context, v uint64) (*cloud.Version, error)
	Versions(ctx context.Context) ([]cloud.Version, error)
	Save(ctx context.Context, raw []byte, author, message string) (*cloud.Version, error)
	Check(ctx context.Context, raw []byte) (string, error)
	Rollback(ctx context.Context, v uint64, author string) (*cloud.Version, error)
	Diff(ctx context.Context, from, to uint64) (string, error)
	Roll(ctx context.Context, r cloud.Rollout) (string, []string, error)
	States(ctx context.Context) ([]cloud.EdgeConfigState, error)
}

// fleetHealth is each edge's health and the fleet's alarms.
type fleetHealth interface {
	Edges(now time.Time) []cloud.EdgeHealth
	Alarms() (active, journal []cloud.FleetAlarm)
}

// accountDesk manages the broker's accounts and the edges' identities.
type accountDesk interface {
	MQTTAccounts() []cloud.AccountInfo
	AddMQTTUser(ctx context.Context, u cloud.MQTTUser) error
	DeleteMQTTUser(ctx context.Context, name string) error
	SetMQTTUserDisabled(ctx context.Context, name string, disabled bool) error
	RotateMQTTPassword(ctx context.Context, name string) (string, error)
	RevokeEdge(ctx context.Context, group, edgeID string) ([]string, error)
	ProvisionEdge(ctx context.Context, group, edgeID string) (username, password string, err error)
	BrokerAddr() string
}

// userStore keeps the users made through the API.
type userStore interface {
	UIUsers(ctx context.Context) ([]cloud.UIUser, error)
	PutUIUser(ctx context.Context, u cloud.UIUser) error
	DeleteUIUser(ctx context.Context, name string) error
}

// tokenStore keeps the API tokens (their hashes).
type tokenStore interface {
	APITokens(ctx context.Context) ([]cloud.APIToken, error)
	PutAPIToken(ctx context.Context, t cloud.APIToken) error
	DeleteAPIToken(ctx context.Context, id string) error
	TokenUses(ctx context.Context) ([]cloud.TokenUse, error)
	PutTokenUse(ctx context.Context, u cloud.TokenUse) error
}

// dashboardStore keeps the machine dashboards' layouts.
type dashboardStore interface {
	Dashboards(ctx context.Context) ([]cloud.Dashboard, error)
	PutDashboard(ctx context.Context, d cloud.Dashboard) error
}

// clusterView is the backbone's nodes as this one sees them.
type clusterView interface {
	Nodes() []store.NodeInfo
	Replicas() int
}

// confirmKeeper keeps the MCP confirmations' key and the answers redeemed
// (cloud/mcpsecret.go).
type confirmKeeper interface {
	MCPConfirmKey(ctx context.Context) ([]byte, error)
	RedeemOnce(ctx context.Context, id string) (bool, error)
}

// jobHolders says which node runs each of the cluster's one-of-each jobs.
type jobHolders interface {
	Jobs(ctx context.Context) (map[string]string, error)
	NodeDetails(ctx context.Context) (map[string]cloud.NodeDetails, error)
}

// edgeUpdates keeps the edge releases and rolls them out.
type edgeUpdates interface {
	Upload(ctx context.Context, m release.Manifest, body io.Reader, by string) (*cloud.Release, error)
	Releases(ctx context.Context) ([]cloud.Release, error)
	Release(ctx context.Context, version string) (*cloud.Release, error)
	StartRollout(ctx context.Context, req cloud.UpdateRolloutRequest, by string) (*cloud.UpdateRollout, error)
	Rollouts(ctx context.Context) ([]cloud.UpdateRollout, error)
	Rollout(ctx context.Context, id string) (*cloud.UpdateRollout, error)
	Progress(r *cloud.UpdateRollout, now time.Time) []cloud.EdgeUpdate
}

// parts are the cloud's parts the handlers use.
type parts struct {
	history  historyReader
	audit    auditTrail
	tags     tagDirectory
	live     liveFeed
	alarms   alarmDesk
	writer   tagWriter
	fleet    fleetConfig
	health   fleetHealth
	accounts accountDesk
	users    userStore
	tokens   tokenStore
	boards   dashboardStore
	cluster  clusterView
	jobs     jobHolders
	confirm  confirmKeeper
	updates  edgeUpdates
	sinks    func(ctx context.Context) []cloud.SinkStats
	ready    func() error
}

// partsOf takes the parts of a started cloud.
func partsOf(c *cloud.Cloud) (parts, bool) {
	if c.Historian == nil || c.Registry == nil || c.Hub == nil || c.Host == nil || c.Fleet == nil || c.Health == nil || c.Updates == nil {
		return parts{}, false
	}
	return parts{history: c.Historian, audit: c.Historian, tags: c.Registry, live: c.Hub, alarms: c,
		writer: c.Host, fleet: c.Fleet, health: c.Health, accounts: c, users: c, tokens: c, boards: c, cluster: c.Bus, jobs: c, confirm: c, updates: c.Updates, sinks: c.SinkStatus, ready: c.ReadyErr}, true
}
