package till_test

import (
	"go/ast"
	"os"
	"path/filepath"
	"testing"
)

// TestRequestPathShape keeps the request path readable: no function in
// proxy (outside tests) runs over 80 lines, and gateway.go, the
// lifecycle, stays under 300.
func TestRequestPathShape(t *testing.T) {
	const maxFunc, maxGateway = 80, 300
	fset, pkgs := modulePackages(t)
	seen := false
	for _, p := range pkgs {
		if p.dir != "proxy" {
			continue
		}
		seen = true
		for _, f := range p.files {
			name := fset.Position(f.Pos()).Filename
			if filepath.Base(name) == "gateway.go" {
				if n := fset.File(f.Pos()).LineCount(); n >= maxGateway {
					t.Errorf("%s has %d lines; keep it under %d: split what is not the gateway's lifecycle into a file of its own", name, n, maxGateway)
				}
			}
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok {
					continue
				}
				start, end := fset.Position(fd.Pos()), fset.Position(fd.End())
				if n := end.Line - start.Line + 1; n > maxFunc {
					t.Errorf("%s:%d: %s has %d lines; keep each function of the request path within %d", name, start.Line, fd.Name.Name, n, maxFunc)
				}
			}
		}
	}
	if !seen {
		t.Fatal("no proxy package found: is the test running at the module root?")
	}
}

// TestReadmeSize: the README is a user's document, under 25,000 bytes;
// the reference holds the rest (docs/reference.md).
func TestReadmeSize(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(b) >= 25000 {
		t.Errorf("README.md is %d bytes, want under 25,000: move detail to docs/reference.md", len(b))
	}
}
