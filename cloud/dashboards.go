package cloud

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/calx-iiot/calx/uns"
)

// bucketDashboards keeps the machine dashboards' layouts, one per template.
const bucketDashboards = "CALX_DASHBOARDS"

// Dashboard is how the machines of a template are shown: the tags on the
// site's card (KPIs) and the tiles of the machine's page, in order, by
// their names under the machine. None set: every tag, in name order.
type Dashboard struct {
	Template  string    `json:"template"`
	KPIs      []string  `json:"kpis"`
	Tiles     []string  `json:"tiles"`
	UpdatedBy string    `json:"updated_by"`
	Updated   time.Time `json:"updated"`
}

// maxDashboardTags bounds the KPIs and tiles of a dashboard.
const maxDashboardTags = 200

// Validate checks the names of a dashboard.
func (d Dashboard) Validate() error {
	if err := uns.ValidateSegment(d.Template); err != nil {
		return fmt.Errorf("template %q: %w", d.Template, err)
	}
	if len(d.KPIs) > 8 {
		return fmt.Errorf("kpis: %d, at most 8 fit a site's card", len(d.KPIs))
	}
	if len(d.Tiles) > maxDashboardTags {
		return fmt.Errorf("tiles: %d, at most %d", len(d.Tiles), maxDashboardTags)
	}
	for _, list := range [][]string{d.KPIs, d.Tiles} {
		for _, n := range list {
			if err := uns.Path(n).Validate(); err != nil {
				return fmt.Errorf("tag %q: %w", n, err)
			}
		}
	}
	return nil
}

func (c *Cloud) openDashboards(ctx context.Context) error {
	kv, err := c.Bus.JetStream().CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketDashboards, Storage: jetstream.FileStorage, History: 5})
	if err != nil {
		return fmt.Errorf("cloud: dashboards bucket: %w", err)
	}
	c.dashboards = kept[Dashboard]{kv: kv, key: func(d Dashboard) string { return d.Template }, log: c.log}
	return nil
}

// Dashboards lists the layouts set, by template.
func (c *Cloud) Dashboards(ctx context.Context) ([]Dashboard, error) {
	ds, err := c.dashboards.list(ctx)
	if err != nil {
		return ds, fmt.Errorf("dashboards: %w", err)
	}
	return ds, nil
}

// PutDashboard sets the layout of a template's machines.
func (c *Cloud) PutDashboard(ctx context.Context, d Dashboard) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrBadDashboard, err)
	}
	if err := c.dashboards.put(ctx, d); err != nil {
		return fmt.Errorf("dashboard %s: %w", d.Template, err)
	}
	return nil
}

// ErrBadDashboard is returned, wrapped, for a layout that is not valid.
var ErrBadDashboard = errors.New("dashboard not valid")
