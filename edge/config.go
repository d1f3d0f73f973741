package edge

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/calx-iiot/calx/release"

	"go.yaml.in/yaml/v3"

	"github.com/calx-iiot/calx/config"
	"github.com/calx-iiot/calx/guard"
)

// Config is the YAML config of `calx edge`.
type Config struct {
	// DataDir keeps the edge's state; default ./calx-edge-data.
	DataDir string `yaml:"data_dir"`
	// HTTP is the edge's health and metrics endpoint: its address, or
	// {listen, token_sha256}; empty: none.
	HTTP SiteHTTP `yaml:"http"`
	// MQTT is the edge's own broker, where consumers on site read UNS JSON
	// (uns/<path>, retained): its address, or {listen, allow_anonymous,
	// tls, limits}; empty: none.
	MQTT SiteMQTT `yaml:"mqtt"`
	// MQTTUsers are the accounts of the edge's own broker (roles reader and
	// device); without them, only with mqtt.allow_anonymous does it take
	// any client on site.
	MQTTUsers []LocalUser  `yaml:"mqtt_users"`
	Buffer    BufferConfig `yaml:"buffer"`
	Cloud     CloudConfig  `yaml:"cloud"`
	// Updates let the cloud update the edge's software (docs/UPDATES.md).
	Updates UpdatesConfig `yaml:"updates"`
	// Devices are the machines this edge reads.
	Devices []DeviceConfig `yaml:"devices"`

	file string
}

// SiteMQTT is the edge's own broker: written as its address alone
// (mqtt: 127.0.0.1:1884), or in full.
type SiteMQTT struct {
	Listen string `yaml:"listen"`
	// AllowAnonymous lets clients in without an account (they may
	// subscribe, and publish anywhere but under uns/); off by default.
	AllowAnonymous bool         `yaml:"allow_anonymous"`
	TLS            config.TLS   `yaml:"tls"`
	Limits         guard.Limits `yaml:"limits"`
}

// UnmarshalYAML takes an address or the full form, strictly.
func (m *SiteMQTT) UnmarshalYAML(n *yaml.Node) error {
	type plain SiteMQTT
	*m = SiteMQTT{}
	if err := config.DecodeShort(n, &m.Listen, (*plain)(m)); err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	return nil
}

// SiteHTTP is the edge's health, status and metrics endpoint: written as
// its address alone (http: 127.0.0.1:8081), or in full.
type SiteHTTP struct {
	Listen string `yaml:"listen"`
	// TokenSHA256, when set, is the hex SHA-256 of the bearer token that
	// /api/v1/status and /metrics ask for (/healthz and /readyz stay open).
	TokenSHA256 string `yaml:"token_sha256"`
}

// UnmarshalYAML takes an address or the full form, strictly.
func (h *SiteHTTP) UnmarshalYAML(n *yaml.Node) error {
	type plain SiteHTTP
	*h = SiteHTTP{}
	if err := config.DecodeShort(n, &h.Listen, (*plain)(h)); err != nil {
		return fmt.Errorf("http: %w", err)
	}
	return nil
}

// UpdatesConfig is how the edge takes software updates from the cloud.
type UpdatesConfig struct {
	// PublicKey is the release signing key the edge trusts (calx release
	// keygen's release.pub); without it every release is refused.
	PublicKey release.PublicKeyYAML `yaml:"public_key"`
	// HealthWindow is how long a new binary has to connect, be born and
	// send data before the previous one is put back; default 2m.
	HealthWindow config.Duration `yaml:"health_window"`
	// MaxRate caps the download, in bytes a second (1MiB...); 0: no cap.
	MaxRate config.Size `yaml:"max_rate"`
}

// BufferConfig bounds the store-and-forward buffer.
type BufferConfig struct {
	MaxBytes     config.Size     `yaml:"max_bytes"`
	MaxAge       config.Duration `yaml:"max_age"`
	DrainRate    float64         `yaml:"drain_rate"`
	SyncInterval config.Duration `yaml:"sync_interval"`
}

// CloudConfig says how the edge reaches the cloud broker.
type CloudConfig struct {
	Broker string `yaml:"broker"`
	// Brokers are further servers, tried in turn.
	Brokers []string `yaml:"brokers"`
	// Username and Password are this edge's own broker credentials. The
	// password may instead come from PasswordFile or the environment
	// variable CALX_EDGE_PASSWORD.
	Username     string `yaml:"username"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	// CAFile is a PEM bundle that signs the broker's certificate (ssl:// only).
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are this edge's client certificate, for a broker
	// that takes them (mTLS): its name is the username; no password is
	// then needed. They are read again when they change.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	Group    string `yaml:"group"`
	EdgeID   string `yaml:"edge_id"`
	// PrimaryHost is the host id whose STATE gates the births (default
	// calx); "none" publishes without waiting for any host, as Sparkplug
	// allows for an edge node with no primary host.
	PrimaryHost string `yaml:"primary_host"`
	// Templates sends each device as a Sparkplug Template instance (its
	// machine type's definition in NBIRTH); off, as plain metrics, for a
	// host that does not take templates.
	Templates bool `yaml:"templates"`
}

// LoadConfig reads and validates an edge config file.
func LoadConfig(file string) (*Config, error) {
	c := &Config{file: file}
	if err := config.Load(file, c); err != nil {
		return nil, err
	}
	if c.DataDir == "" {
		c.DataDir = "./calx-edge-data"
	}
	switch c.Cloud.PrimaryHost {
	case "":
		c.Cloud.PrimaryHost = "calx"
	case "none":
		c.Cloud.PrimaryHost = ""
	}
	return c, nil
}

// Options turns the config into edge options, building each connector.
func (c *Config) Options(log *slog.Logger, version string) (Options, error) {
	o := Options{Broker: c.Cloud.Broker, Brokers: c.Cloud.Brokers, Username: c.Cloud.Username, Password: c.Cloud.Password,
		Group: c.Cloud.Group, EdgeID: c.Cloud.EdgeID, PrimaryHost: c.Cloud.PrimaryHost,
		DataDir: c.DataDir, Logger: log, Version: version,
		BufferMaxBytes: int64(c.Buffer.MaxBytes), BufferMaxAge: c.Buffer.MaxAge.Std(), DrainRate: c.Buffer.DrainRate,
		SyncInterval: c.Buffer.SyncInterval.Std(), LocalMQTT: c.MQTT.Listen, LocalUsers: c.MQTTUsers, LocalAllowAnonymous: c.MQTT.AllowAnonymous, LocalLimits: c.MQTT.Limits,
		SparkplugTemplates: c.Cloud.Templates,
		Updates:            UpdateOptions{PublicKey: c.Updates.PublicKey.Key, Window: c.Updates.HealthWindow.Std(), MaxBytesPerSecond: int64(c.Updates.MaxRate)}}
	var err error
	if o.LocalTLS, err = c.MQTT.TLS.Load(); err != nil {
		return o, fmt.Errorf("%s: mqtt.%w", c.file, err)
	}
	if err := c.MQTT.Limits.Validate(); err != nil {
		return o, fmt.Errorf("%s: mqtt.%w", c.file, err)
	}
	if err := guard.CheckTokenSHA256(c.HTTP.TokenSHA256); err != nil {
		return o, fmt.Errorf("%s: http.%w", c.file, err)
	}
	if c.Cloud.PasswordFile != "" {
		b, err := os.ReadFile(c.Cloud.PasswordFile)
		if err != nil {
			return o, fmt.Errorf("%s: cloud.password_file: %w", c.file, err)
		}
		o.Password, o.PasswordFile = strings.TrimSpace(string(b)), c.Cloud.PasswordFile
	}
	if env := os.Getenv("CALX_EDGE_PASSWORD"); env != "" {
		o.Password, o.PasswordFile = env, ""
	}
	if o.Username == "" || o.Password == "" && c.Cloud.CertFile == "" {
		return o, fmt.Errorf("%s: cloud.username and a password (cloud.password, cloud.password_file or CALX_EDGE_PASSWORD) or a client certificate (cloud.cert_file) are required", c.file)
	}
	if c.Cloud.CAFile != "" || c.Cloud.CertFile != "" {
		o.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if c.Cloud.CertFile != "" || c.Cloud.KeyFile != "" {
		get, err := config.ClientCertificate(c.Cloud.CertFile, c.Cloud.KeyFile)
		if err != nil {
			return o, fmt.Errorf("%s: cloud.cert_file/key_file: %w", c.file, err)
		}
		o.TLS.GetClientCertificate = get
	}
	if c.Cloud.CAFile != "" {
		pem, err := os.ReadFile(c.Cloud.CAFile)
		if err != nil {
			return o, fmt.Errorf("%s: cloud.ca_file: %w", c.file, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return o, fmt.Errorf("%s: cloud.ca_file %s: no PEM certificate in it", c.file, c.Cloud.CAFile)
		}
		o.TLS.RootCAs = pool
	}
	var devLog *slog.Logger
	if log != nil {
		devLog = log.With("edge", c.Cloud.EdgeID)
	}
	devs, err := BuildDevices(c.file, "devices", c.Devices, devLog)
	if err != nil {
		return o, err
	}
	o.Devices = devs
	if err := o.Validate(); err != nil {
		return o, fmt.Errorf("%s: %w", c.file, err)
	}
	return o, nil
}
