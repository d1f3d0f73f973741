package transform

import (
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
)

// identifiers returns the variables an expression reads, in order.
func identifiers(code string) ([]string, error) {
	tree, err := parser.Parse(code)
	if err != nil {
		return nil, err
	}
	// Callees first: a walk visits a call's callee before the call.
	c := &calleeVisitor{callees: map[ast.Node]bool{}}
	ast.Walk(&tree.Node, c)
	v := &identVisitor{seen: map[string]bool{}, callees: c.callees}
	ast.Walk(&tree.Node, v)
	return v.names, nil
}

type identVisitor struct {
	names   []string
	seen    map[string]bool
	callees map[ast.Node]bool
}

type calleeVisitor struct{ callees map[ast.Node]bool }

func (v *calleeVisitor) Visit(n *ast.Node) {
	if x, ok := (*n).(*ast.CallNode); ok {
		v.callees[x.Callee] = true
	}
}

func (v *identVisitor) Visit(n *ast.Node) {
	switch x := (*n).(type) {
	case *ast.IdentifierNode:
		if !v.callees[x] && !v.seen[x.Value] {
			v.seen[x.Value] = true
			v.names = append(v.names, x.Value)
		}
	}
}
