package fleet

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Redacted stands in for a secret in a fleet config shown to a person or
// a client: an API reader sees it instead of the value, and a config sent
// back with it keeps the value it stands for.
const Redacted = "<redacted>"

// secretKey says whether a setting holds a secret, by its name (any
// parameter or setting named so, wherever it is) or its place (every value
// of a headers map, which may carry an Authorization).
func secretKey(key, parent string) bool {
	k := strings.ToLower(key)
	if strings.EqualFold(parent, "headers") || k == "authorization" {
		return true
	}
	for _, s := range []string{"password", "passwd", "secret", "token", "credential", "api_key", "apikey", "private_key"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// walkSecrets calls f with the path and node of every secret scalar of a
// YAML document. Items of a list are named by their id, name or edge_id
// where they have one, so that a reordered list still finds its values.
func walkSecrets(n *yaml.Node, path, parent string, f func(path string, n *yaml.Node)) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			walkSecrets(c, path, parent, f)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := path + "/" + k.Value
			if v.Kind == yaml.ScalarNode && secretKey(k.Value, parent) && v.Tag != "!!null" {
				f(p, v)
				continue
			}
			walkSecrets(v, p, k.Value, f)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			walkSecrets(c, path+"/"+itemName(c, i), parent, f)
		}
	}
}

func itemName(n *yaml.Node, i int) string {
	if n.Kind == yaml.MappingNode {
		var parts []string
		for j := 0; j+1 < len(n.Content); j += 2 {
			switch n.Content[j].Value {
			case "group", "edge_id", "id", "name":
				parts = append(parts, n.Content[j].Value+"="+n.Content[j+1].Value)
			}
		}
		if len(parts) > 0 {
			return "[" + strings.Join(parts, ",") + "]"
		}
	}
	return fmt.Sprintf("[%d]", i)
}

func parseDoc(text string) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		return nil, err
	}
	return &doc, nil
}

func encodeDoc(doc *yaml.Node) (string, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return "", err
	}
	if err := enc.Close(); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// Redact returns a fleet config's text with every secret replaced by
// Redacted; a text with none comes back as it is.
func Redact(text string) (string, error) {
	doc, err := parseDoc(text)
	if err != nil {
		return "", fmt.Errorf("fleet: redact: %w", err)
	}
	changed := false
	walkSecrets(doc, "", "", func(_ string, n *yaml.Node) {
		if n.Value != "" && n.Value != Redacted {
			n.Value, n.Style, n.Tag, changed = Redacted, 0, "!!str", true
		}
	})
	if !changed {
		return text, nil
	}
	return encodeDoc(doc)
}

// ErrRedactedUnknown is returned for a config that holds Redacted where
// the config it replaces has no value to keep.
var ErrRedactedUnknown = errors.New("a redacted secret with no value to keep")

// Unredact returns text with every Redacted it holds replaced by the
// value at the same place in prev (the config it replaces), so that a
// config read through the API and sent back keeps its secrets.
func Unredact(text, prev string) (string, error) {
	if !strings.Contains(text, Redacted) {
		return text, nil
	}
	doc, err := parseDoc(text)
	if err != nil {
		return "", fmt.Errorf("fleet: %w", err)
	}
	old := map[string]string{}
	if prev != "" {
		pd, err := parseDoc(prev)
		if err != nil {
			return "", fmt.Errorf("fleet: previous version: %w", err)
		}
		walkSecrets(pd, "", "", func(p string, n *yaml.Node) { old[p] = n.Value })
	}
	var missing []string
	walkSecrets(doc, "", "", func(p string, n *yaml.Node) {
		if n.Value != Redacted {
			return
		}
		v, ok := old[p]
		if !ok || v == Redacted {
			missing = append(missing, p)
			return
		}
		n.Value = v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("%w: %s (give the value)", ErrRedactedUnknown, strings.Join(missing, ", "))
	}
	return encodeDoc(doc)
}
