package edge

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Tags a connector declares while it runs, kept in the data dir.

// maxDeclared bounds the tags a connector may declare for one device while
// it runs, so that a flood of topics cannot grow a birth without end.
const maxDeclared = 10000

// declare adds tags a connector learned while running (see Declarer).
func (e *Edge) declare(d *device, defs []TagDef) error {
	e.mu.Lock()
	var added []TagDef
	var errs []error
	for _, td := range defs {
		if _, known := d.byName[td.Name]; known {
			continue
		}
		if len(d.declared)+len(added) >= maxDeclared {
			errs = append(errs, fmt.Errorf("device %s: tag %q not added: %d tags declared already", d.ID, td.Name, maxDeclared))
			continue
		}
		if err := e.addMetric(d, td); err != nil {
			errs = append(errs, err)
			continue
		}
		added = append(added, td)
	}
	if len(added) == 0 {
		e.mu.Unlock()
		return errors.Join(errs...)
	}
	d.declared = append(d.declared, added...)
	d.gen++
	if !d.lost {
		e.events = append(e.events, event{ev: evBirth, dev: d, at: time.Now()})
	}
	all := append([]TagDef(nil), d.declared...)
	e.mu.Unlock()
	if err := e.saveDeclared(d, all); err != nil {
		errs = append(errs, err)
	}
	e.log.Info("tags declared", "device", d.ID, "added", len(added), "declared", len(all))
	e.signal()
	return errors.Join(errs...)
}

func (e *Edge) declaredFile(d *device) string {
	return filepath.Join(e.opts.DataDir, "declared", d.ID+".json")
}

func (e *Edge) loadDeclared(d *device) ([]TagDef, error) {
	b, err := os.ReadFile(e.declaredFile(d))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("edge: declared tags: %w", err)
	}
	var defs []TagDef
	if err := json.Unmarshal(b, &defs); err != nil {
		return nil, fmt.Errorf("edge: declared tags %s: %w", e.declaredFile(d), err)
	}
	return defs, nil
}

// saveDeclared writes the device's declared tags, atomically.
func (e *Edge) saveDeclared(d *device, defs []TagDef) error {
	path := e.declaredFile(d)
	b, err := json.MarshalIndent(defs, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("edge: declared tags: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("edge: declared tags: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("edge: declared tags: %w", err)
	}
	return nil
}
