package cloud

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/calx-iiot/calx/sink/postgres"

	"github.com/calx-iiot/calx/release"

	"go.yaml.in/yaml/v3"

	"github.com/calx-iiot/calx/config"
	"github.com/calx-iiot/calx/guard"
	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/store/historian"
	"github.com/calx-iiot/calx/uns"
)

// Config is the YAML config of `calx cloud`.
type Config struct {
	DataDir string     `yaml:"data_dir"`
	HostID  string     `yaml:"host_id"`
	HTTP    HTTPConfig `yaml:"http"`
	MQTT    MQTTConfig `yaml:"mqtt"`
	// NATS exposes the backbone to NATS clients: {listen, users, tls};
	// empty: no port.
	NATS NATSConfig `yaml:"nats"`
	// SyncInterval is how often the backbone fsyncs (default 1s): what a
	// power cut of the VM can lose at most.
	SyncInterval config.Duration `yaml:"sync_interval"`
	// Users of the UI and API.
	Users []UserConfig `yaml:"users"`
	// Edges are the edge nodes allowed to publish, each with its own
	// credentials and Sparkplug ids.
	Edges []EdgeConfig `yaml:"edges"`
	// Readers are MQTT clients that may subscribe to everything and publish nothing.
	Readers []ReaderConfig `yaml:"readers"`
	// MQTTUsers are other MQTT accounts with their own topic filters.
	Accounts []MQTTUserConfig `yaml:"mqtt_users"`
	// Retention keeps the history of each UNS prefix for a while; the
	// longest prefix that covers a tag applies. Without a rule, forever.
	Retention []RetentionConfig `yaml:"retention"`
	// Historian bounds the historian's memory and threads.
	Historian HistorianConfig `yaml:"historian"`
	// FleetHealth sets when an edge counts as degraded and when its
	// conditions become alarms.
	FleetHealth FleetHealthConfig `yaml:"fleet_health"`
	// Broker, when set, makes the cloud the Sparkplug primary host on the
	// plant's own broker (HiveMQ, EMQX, Mosquitto) too.
	Broker *PlantBrokerConfig `yaml:"broker"`
	// Cluster, when set, makes the cloud a node of a cluster of clouds
	// whose backbone is replicated (clusterconfig.go).
	Cluster *ClusterConfig `yaml:"cluster"`
	// Sinks get every value besides the historian: the plant's PostgreSQL
	// or TimescaleDB (docs/INTEGRATIONS.md).
	Sinks []SinkConfig `yaml:"sinks"`
	// Updates holds the public key edge releases are signed with
	// (docs/UPDATES.md); without it the cloud takes no release.
	Updates struct {
		PublicKey release.PublicKeyYAML `yaml:"public_key"`
	} `yaml:"updates"`
}

// PlantBrokerConfig is the plant's own broker, for the primary host.
type PlantBrokerConfig struct {
	URL          string `yaml:"url"` // mqtt://, tcp://, mqtts://, ssl://, tls://
	Username     string `yaml:"username"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	// CAFile is a PEM bundle that signs the broker's certificate.
	CAFile   string `yaml:"ca_file"`
	ClientID string `yaml:"client_id"`
}

// Uplink turns the config into the cloud's option, reading the password
// and CA files.
func (b *PlantBrokerConfig) Uplink() (*UplinkOptions, error) {
	if b == nil {
		return nil, nil
	}
	if _, err := config.BrokerURL(b.URL); err != nil {
		return nil, err
	}
	o := &UplinkOptions{URL: b.URL, Username: b.Username, Password: b.Password, ClientID: b.ClientID}
	if b.PasswordFile != "" {
		pw, err := os.ReadFile(b.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("password_file: %w", err)
		}
		o.Password = strings.TrimSpace(string(pw))
	}
	if b.CAFile != "" {
		pem, err := os.ReadFile(b.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate in it", b.CAFile)
		}
		o.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return o, nil
}

// FleetHealthConfig are the thresholds of the fleet's health (see
// HealthOptions for their defaults).
type FleetHealthConfig struct {
	OfflineAfter   config.Duration `yaml:"offline_after"`
	StaleAfter     config.Duration `yaml:"stale_after"`
	OldestUnsent   config.Duration `yaml:"oldest_unsent"`
	BufferMessages int64           `yaml:"buffer_messages"`
	BufferPercent  float64         `yaml:"buffer_percent"`
	ClockSkew      config.Duration `yaml:"clock_skew"`
}

// HealthOptions turns the config into the monitor's thresholds.
func (c *Config) HealthOptions() HealthOptions {
	f := c.FleetHealth
	return HealthOptions{OfflineAfter: f.OfflineAfter.Std(), StaleAfter: f.StaleAfter.Std(), OldestUnsent: f.OldestUnsent.Std(),
		BufferMessages: f.BufferMessages, BufferPercent: f.BufferPercent, ClockSkew: f.ClockSkew.Std()}
}

// RetentionConfig is one retention rule of the historian.
type RetentionConfig struct {
	Prefix  string          `yaml:"prefix"`
	Raw     config.Duration `yaml:"raw"`     // raw points; 0: forever
	Rollups config.Duration `yaml:"rollups"` // minute rollups; 0: forever
	Export  bool            `yaml:"export"`  // raw points to Parquet before they go
}

// RetentionRules turns the config into the historian's rules.
func (c *Config) RetentionRules() []historian.RetentionRule {
	var out []historian.RetentionRule
	for _, r := range c.Retention {
		out = append(out, historian.RetentionRule{Prefix: r.Prefix, Raw: r.Raw.Std(), Rollups: r.Rollups.Std(), Export: r.Export})
	}
	return out
}

// NATSConfig is the backbone's NATS port: written as its address alone,
// or in full; a port needs users.
type NATSConfig struct {
	Listen string           `yaml:"listen"`
	Users  []store.NATSUser `yaml:"users"`
	TLS    config.TLS       `yaml:"tls"`
}

// UnmarshalYAML takes an address or the full form, strictly.
func (n *NATSConfig) UnmarshalYAML(node *yaml.Node) error {
	type plain NATSConfig
	*n = NATSConfig{}
	if err := config.DecodeShort(node, &n.Listen, (*plain)(n)); err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	return nil
}

// MQTTUserConfig is an MQTT account limited to topic filters.
type MQTTUserConfig struct {
	Username     string   `yaml:"username"`
	PasswordHash string   `yaml:"password_hash"`
	Publish      []string `yaml:"publish"`
	Subscribe    []string `yaml:"subscribe"`
}

// HTTPConfig is the web listener.
type HTTPConfig struct {
	Listen string    `yaml:"listen"`
	TLS    TLSConfig `yaml:"tls"`
	// MetricsTokenSHA256, when set, is the hex SHA-256 of the bearer token
	// /metrics asks for.
	MetricsTokenSHA256 string `yaml:"metrics_token_sha256"`
	// SessionIdle ends a sign-in unused for this long (default 2h);
	// SessionMax ends any after this long (default 12h).
	SessionIdle config.Duration `yaml:"session_idle"`
	SessionMax  config.Duration `yaml:"session_max"`
	// BehindTLSProxy says that clients reach the UI over HTTPS through a
	// proxy in front of it: the session cookie is then Secure.
	BehindTLSProxy bool `yaml:"behind_tls_proxy"`
	// OIDC, when set, offers single sign-on through an OpenID Connect
	// provider beside the users below (docs/SECURITY.md).
	OIDC *OIDCConfig `yaml:"oidc"`
	// MCP bounds the AI assistants' endpoint (docs/MCP.md).
	MCP MCPConfig `yaml:"mcp"`
}

// MCPConfig is the rate of MCP calls each user may make: calls a second
// (default 20) and at once (default 40); and the roles that may write tags
// and acknowledge alarms through MCP, each write confirmed by the user
// (none by default).
type MCPConfig struct {
	Rate   float64  `yaml:"rate"`
	Burst  int      `yaml:"burst"`
	Writes []string `yaml:"writes"`
}

// OIDCConfig is single sign-on: the provider, this client, and which of
// the provider's groups get which role and scope (the first match wins).
type OIDCConfig struct {
	Issuer   string `yaml:"issuer"`
	ClientID string `yaml:"client_id"`
	// ClientSecretFile holds the client secret; none is a public client.
	ClientSecretFile string `yaml:"client_secret_file"`
	// CAFile is the CA of the provider's certificate when the system's
	// do not cover it.
	CAFile        string          `yaml:"ca_file"`
	RedirectURL   string          `yaml:"redirect_url"`
	Scopes        []string        `yaml:"scopes"`
	UsernameClaim string          `yaml:"username_claim"`
	GroupsClaim   string          `yaml:"groups_claim"`
	Label         string          `yaml:"label"`
	Groups        []OIDCGroupRole `yaml:"groups"`
}

// OIDCGroupRole maps a provider's group to a role and scope.
type OIDCGroupRole struct {
	Group string   `yaml:"group"`
	Role  string   `yaml:"role"`
	Scope []string `yaml:"scope"`
}

// HistorianConfig bounds DuckDB's memory (default 64MiB: queries spill
// to disk beyond it) and threads (default: the machine's cores).
type HistorianConfig struct {
	MemoryLimit config.Size `yaml:"memory_limit"`
	Threads     int         `yaml:"threads"`
}

// MQTTConfig is the broker listener.
type MQTTConfig struct {
	Listen string    `yaml:"listen"`
	TLS    TLSConfig `yaml:"tls"`
	// UNSInterval is how often at most a tag's retained UNS JSON on
	// uns/<path> is updated (default 1s); 0 publishes every value.
	UNSInterval *config.Duration `yaml:"uns_interval"`
	// Limits bound connections, packets and sessions (docs/SECURITY.md).
	Limits guard.Limits `yaml:"limits"`
}

// UNSEvery turns uns_interval into Options.UNSInterval.
func (m MQTTConfig) UNSEvery() time.Duration {
	switch {
	case m.UNSInterval == nil:
		return 0
	case *m.UNSInterval <= 0:
		return -1
	}
	return m.UNSInterval.Std()
}

// TLSConfig names a certificate and key in PEM files.
type TLSConfig = config.TLS

// UserConfig is a UI/API user.
type UserConfig struct {
	Username     string `yaml:"username"`
	PasswordHash string `yaml:"password_hash"`
	Role         string `yaml:"role"`
	// Scope is the UNS prefixes the user may see and act on; none is all.
	Scope []string `yaml:"scope"`
}

// EdgeConfig is one edge node's broker credentials.
type EdgeConfig struct {
	Username     string `yaml:"username"`
	PasswordHash string `yaml:"password_hash"`
	Group        string `yaml:"group"`
	EdgeID       string `yaml:"edge_id"`
}

// ReaderConfig is a read-only MQTT client.
type ReaderConfig struct {
	Username     string `yaml:"username"`
	PasswordHash string `yaml:"password_hash"`
	// Scope limits it to the uns/ topics under these UNS prefixes.
	Scope []string `yaml:"scope"`
}

// LoadConfig reads and validates a cloud config file.
func LoadConfig(file string) (*Config, error) {
	c := &Config{}
	if err := config.Load(file, c); err != nil {
		return nil, err
	}
	if c.DataDir == "" {
		c.DataDir = "./calx-cloud-data"
	}
	if c.HostID == "" {
		c.HostID = "calx"
	}
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = "127.0.0.1:8080"
	}
	if c.MQTT.Listen == "" {
		c.MQTT.Listen = "127.0.0.1:1883"
	}
	var errs []error
	seen := map[string]bool{}
	for i, u := range c.MQTTUsers() {
		if err := u.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: mqtt user %d: %w", file, i+1, err))
		}
		if seen[u.Username] {
			errs = append(errs, fmt.Errorf("%s: mqtt username %q is used twice", file, u.Username))
		}
		seen[u.Username] = true
	}
	if _, err := c.HTTP.TLS.Load(); err != nil {
		errs = append(errs, fmt.Errorf("%s: http.%w", file, err))
	}
	if _, err := c.Cluster.Store(); err != nil {
		errs = append(errs, fmt.Errorf("%s: cluster: %w", file, err))
	}
	if err := guard.CheckTokenSHA256(c.HTTP.MetricsTokenSHA256); err != nil {
		errs = append(errs, fmt.Errorf("%s: http.metrics_%w", file, err))
	}
	if c.HTTP.MCP.Rate < 0 || c.HTTP.MCP.Burst < 0 {
		errs = append(errs, fmt.Errorf("%s: http.mcp: rate %g and burst %d: not negative (0 takes the defaults, 20 and 40)", file, c.HTTP.MCP.Rate, c.HTTP.MCP.Burst))
	}
	for _, r := range c.HTTP.MCP.Writes {
		if r != "operator" && r != "engineer" && r != "admin" {
			errs = append(errs, fmt.Errorf("%s: http.mcp.writes: role %q: operator, engineer or admin (viewers neither write nor acknowledge)", file, r))
		}
	}
	if c.Historian.MemoryLimit < 0 || (c.Historian.MemoryLimit > 0 && c.Historian.MemoryLimit < 64<<20) {
		errs = append(errs, fmt.Errorf("%s: historian.memory_limit: %d bytes: at least 64MiB", file, c.Historian.MemoryLimit))
	}
	if c.Historian.Threads < 0 || c.Historian.Threads > 256 {
		errs = append(errs, fmt.Errorf("%s: historian.threads: %d: from 1 to 256, or 0 for every core", file, c.Historian.Threads))
	}
	if _, err := c.MQTT.TLS.Load(); err != nil {
		errs = append(errs, fmt.Errorf("%s: mqtt.%w", file, err))
	}
	if err := c.MQTT.Limits.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("%s: mqtt.%w", file, err))
	}
	if c.NATS.Listen != "" && len(c.NATS.Users) == 0 {
		errs = append(errs, fmt.Errorf("%s: nats: a port (%s) needs users: it is never open without authentication", file, c.NATS.Listen))
	}
	for i, u := range c.NATS.Users {
		if err := u.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: nats.users[%d]: %w", file, i, err))
		}
	}
	for i, u := range c.Users {
		for j, p := range u.Scope {
			if err := uns.Path(p).Validate(); err != nil {
				errs = append(errs, fmt.Errorf("%s: users[%d].scope[%d]: %w", file, i, j, err))
			}
		}
	}
	if _, err := c.NATS.TLS.Load(); err != nil {
		errs = append(errs, fmt.Errorf("%s: nats.%w", file, err))
	}
	if _, err := c.Broker.Uplink(); err != nil {
		errs = append(errs, fmt.Errorf("%s: broker: %w", file, err))
	}
	seen = map[string]bool{}
	for i, sk := range c.Sinks {
		if err := sk.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: sinks[%d]: %w", file, i, err))
		}
		if seen[sk.Name] {
			errs = append(errs, fmt.Errorf("%s: sinks[%d]: name %q used twice", file, i, sk.Name))
		}
		seen[sk.Name] = true
	}
	return c, errors.Join(errs...)
}

// SinkConfig is a far end of every value: a name and one kind.
type SinkConfig struct {
	Name     string              `yaml:"name"`
	Postgres *PostgresSinkConfig `yaml:"postgres"`
}

// PostgresSinkConfig is a PostgreSQL or TimescaleDB database.
type PostgresSinkConfig struct {
	// URL is postgres://user@host:port/db?sslmode=verify-full; the password
	// in it, or in PasswordFile.
	URL          string `yaml:"url"`
	PasswordFile string `yaml:"password_file"`
	Schema       string `yaml:"schema"`
}

// Validate checks a sink's name and settings.
func (s SinkConfig) Validate() error {
	if !sinkNameRe.MatchString(s.Name) {
		return fmt.Errorf("name %q: lower-case letters, digits, - and _, up to 32", s.Name)
	}
	if s.Postgres == nil {
		return errors.New("a kind of far end is required: postgres")
	}
	_, err := s.Postgres.Options()
	return err
}

// Options turns the settings into the sink's, reading the password file.
func (p *PostgresSinkConfig) Options() (postgres.Options, error) {
	o := postgres.Options{URL: p.URL, Schema: p.Schema}
	if p.URL == "" {
		return o, errors.New("postgres.url: required")
	}
	if p.PasswordFile != "" {
		pw, err := os.ReadFile(p.PasswordFile)
		if err != nil {
			return o, fmt.Errorf("postgres.password_file: %w", err)
		}
		u, err := url.Parse(p.URL)
		if err != nil || u.User == nil {
			return o, errors.New("postgres.url: a URL with a user name, postgres://user@host/db, goes with password_file")
		}
		u.User = url.UserPassword(u.User.Username(), strings.TrimSpace(string(pw)))
		o.URL = u.String()
	}
	if err := o.Validate(); err != nil {
		return o, err
	}
	return o, nil
}

// MQTTUsers lists the broker credentials of the config.
func (c *Config) MQTTUsers() []MQTTUser {
	var us []MQTTUser
	for _, e := range c.Edges {
		us = append(us, MQTTUser{Username: e.Username, PasswordHash: e.PasswordHash, Role: RoleEdge, Group: e.Group, EdgeID: e.EdgeID})
	}
	for _, r := range c.Readers {
		us = append(us, MQTTUser{Username: r.Username, PasswordHash: r.PasswordHash, Role: RoleReader, Scope: r.Scope})
	}
	for _, m := range c.Accounts {
		us = append(us, MQTTUser{Username: m.Username, PasswordHash: m.PasswordHash, Role: RoleCustom, Publish: m.Publish, Subscribe: m.Subscribe})
	}
	return us
}
