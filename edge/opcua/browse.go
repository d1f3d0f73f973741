package opcua

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
)

// Variable is a variable found by Browse.
type Variable struct {
	NodeID   string
	Path     string // browse names from the Objects folder, joined by '/'
	DataType string
	NodeType string // the OPC UA built-in type a write is sent as, if it is one
	Access   string // r, w or rw
}

// Browse walks the server's address space from the Objects folder, at
// most maxDepth levels deep, and returns its variables.
func Browse(ctx context.Context, s Settings, maxDepth int) ([]Variable, error) {
	if len(s.Tags) == 0 {
		s.Tags = []*Tag{{Name: "browse", NodeID: "i=85"}} // New wants a tag; this one is never read
	}
	srv, err := New("browse", s, nil)
	if err != nil {
		return nil, err
	}
	opts, err := srv.connectOptions(ctx, nil)
	if err != nil {
		return nil, err
	}
	c, err := opcua.NewClient(s.Endpoint, opts...)
	if err != nil {
		return nil, fmt.Errorf("opcua %s: %w", s.Endpoint, err)
	}
	if err := c.Connect(ctx); err != nil {
		return nil, fmt.Errorf("opcua %s: %w", s.Endpoint, err)
	}
	defer c.Close(context.Background())
	var out []Variable
	seen := map[string]bool{}
	var walk func(n *opcua.Node, path string, depth int) error
	walk = func(n *opcua.Node, path string, depth int) error {
		if depth > maxDepth || seen[n.ID.String()] {
			return nil
		}
		seen[n.ID.String()] = true
		refs, err := n.References(ctx, id.HierarchicalReferences, ua.BrowseDirectionForward, ua.NodeClassObject|ua.NodeClassVariable, true)
		if err != nil {
			return fmt.Errorf("browse %s: %w", n.ID, err)
		}
		for _, r := range refs {
			if r.NodeID.NodeID.Namespace() == 0 && r.NodeID.NodeID.IntID() == id.Server {
				continue // the server's own diagnostics, hundreds of them
			}
			child := c.Node(r.NodeID.NodeID)
			if seen[child.ID.String()] {
				continue
			}
			p := strings.TrimPrefix(path+"/"+r.BrowseName.Name, "/")
			if r.NodeClass == ua.NodeClassVariable {
				v := Variable{NodeID: r.NodeID.NodeID.String(), Path: p}
				attrs, err := child.Attributes(ctx, ua.AttributeIDDataType, ua.AttributeIDAccessLevel)
				if err == nil && len(attrs) == 2 {
					if attrs[0].Status == ua.StatusOK && attrs[0].Value != nil {
						if dt, ok := attrs[0].Value.Value().(*ua.NodeID); ok {
							v.DataType, v.NodeType = dataTypeName(dt), nodeTypeName(dt)
						}
					}
					if attrs[1].Status == ua.StatusOK && attrs[1].Value != nil {
						if al, ok := attrs[1].Value.Value().(uint8); ok {
							v.Access = access(ua.AccessLevelType(al))
						}
					}
				}
				out = append(out, v)
			}
			if err := walk(child, p, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(c.Node(ua.NewNumericNodeID(0, id.ObjectsFolder)), "", 0); err != nil {
		return out, err
	}
	// Some servers keep a namespace's objects under its own Objects folder.
	if v, err := c.Node(ua.NewNumericNodeID(0, id.Server_NamespaceArray)).Value(ctx); err == nil {
		if nss, ok := v.Value().([]string); ok {
			for i := 1; i < len(nss); i++ {
				if err := walk(c.Node(ua.NewNumericNodeID(uint16(i), id.ObjectsFolder)), "", 0); err != nil {
					return out, err
				}
			}
		}
	}
	return out, nil
}

func access(a ua.AccessLevelType) string {
	var s string
	if a&ua.AccessLevelTypeCurrentRead != 0 {
		s += "r"
	}
	if a&ua.AccessLevelTypeCurrentWrite != 0 {
		s += "w"
	}
	return s
}

// dataTypeName names the standard data types; others keep their node id.
func dataTypeName(n *ua.NodeID) string {
	if n.Namespace() == 0 {
		switch n.IntID() {
		case id.Boolean:
			return "bool"
		case id.SByte, id.Byte, id.Int16, id.UInt16, id.Int32, id.UInt32, id.Int64, id.UInt64:
			return "int64"
		case id.Float, id.Double:
			return "float64"
		case id.String, id.LocalizedText:
			return "string"
		}
	}
	return n.String()
}

// nodeTypeName names a built-in type a write can be sent as, or "".
func nodeTypeName(n *ua.NodeID) string {
	if n.Namespace() != 0 {
		return ""
	}
	return map[uint32]string{id.Boolean: "Boolean", id.SByte: "SByte", id.Byte: "Byte", id.Int16: "Int16", id.UInt16: "UInt16",
		id.Int32: "Int32", id.UInt32: "UInt32", id.Int64: "Int64", id.UInt64: "UInt64", id.Float: "Float", id.Double: "Double",
		id.String: "String"}[n.IntID()]
}

// WriteYAML prints variables as tag entries ready for a device's settings.
func WriteYAML(w io.Writer, endpoint string, vars []Variable) {
	fmt.Fprintf(w, "# Variables of %s: paste under the tags: of a device with connector: opcua.\ntags:\n", endpoint)
	for _, v := range vars {
		name := strings.NewReplacer("/", "_", " ", "_", ".", "_").Replace(strings.ToLower(v.Path))
		typ := v.DataType
		if typ == "" || strings.Contains(typ, "=") {
			typ = "string"
		}
		fmt.Fprintf(w, "  - name: %s\n    node_id: %q\n    type: %s\n", name, v.NodeID, typ)
		if strings.Contains(v.Access, "w") {
			fmt.Fprintf(w, "    writable: true\n")
			if v.NodeType != "" {
				fmt.Fprintf(w, "    node_type: %s\n", v.NodeType)
			}
		}
		fmt.Fprintf(w, "    description: %q\n", v.Path+" ("+v.DataType+", access "+v.Access+")")
	}
}
