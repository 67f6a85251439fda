// Package till_test checks the documentation of the whole module: every
// package has one package comment, and every exported name has a doc
// comment. It reads the non-test Go files as text, so it also covers
// commands and files built only on other systems.
package till_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// pkg is one package of the module: its folder, name and parsed non-test
// files.
type pkg struct {
	dir   string
	name  string
	files []*ast.File
}

// modulePackages parses the non-test Go files of every folder below the
// module root, skipping hidden folders, testdata and node_modules.
func modulePackages(t *testing.T) (*token.FileSet, []*pkg) {
	t.Helper()
	fset := token.NewFileSet()
	byDir := map[string]*pkg{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != "." && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "node_modules" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		dir := filepath.Dir(path)
		p := byDir[dir]
		if p == nil {
			p = &pkg{dir: dir, name: f.Name.Name}
			byDir[dir] = p
		}
		if f.Name.Name != p.name {
			t.Errorf("%s: package %s, but the folder's other files say %s", path, f.Name.Name, p.name)
		}
		p.files = append(p.files, f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var pkgs []*pkg
	for _, p := range byDir {
		pkgs = append(pkgs, p)
	}
	slices.SortFunc(pkgs, func(a, b *pkg) int { return strings.Compare(a.dir, b.dir) })
	if len(pkgs) < 5 {
		t.Fatalf("found %d packages: is the test running at the module root?", len(pkgs))
	}
	return fset, pkgs
}

// TestPackageComments: each package has exactly one package comment, in
// one of its files, that starts "Package NAME " ("Command NAME " for a
// command, NAME its folder's name), so that go doc shows one text and
// no file's comment silently replaces another's.
func TestPackageComments(t *testing.T) {
	fset, pkgs := modulePackages(t)
	for _, p := range pkgs {
		var with []string
		for _, f := range p.files {
			if f.Doc == nil {
				continue
			}
			with = append(with, fset.Position(f.Package).Filename)
			want := "Package " + p.name + " "
			if p.name == "main" {
				want = "Command " + filepath.Base(p.dir) + " "
			}
			if text := f.Doc.Text(); !strings.HasPrefix(text, want) {
				t.Errorf("%s: package comment starts %q, want %q", fset.Position(f.Doc.Pos()), firstLine(text), want+"…")
			}
		}
		switch len(with) {
		case 1:
		case 0:
			t.Errorf("%s: package %s has no package comment", p.dir, p.name)
		default:
			t.Errorf("%s: package %s has %d package comments, want 1: %s", p.dir, p.name, len(with), strings.Join(with, ", "))
		}
	}
}

// TestExportedNamesDocumented: every exported name is documented:
// functions, methods of exported types, types, constants and variables
// (a group's comment covers the names declared in it), and the exported
// fields and interface methods of exported types (a line comment after a
// field counts). Package main exports nothing, so it is left out.
func TestExportedNamesDocumented(t *testing.T) {
	fset, pkgs := modulePackages(t)
	for _, p := range pkgs {
		if p.name == "main" {
			continue
		}
		for _, f := range p.files {
			for _, missing := range undocumented(f) {
				t.Errorf("%s: %s is exported and has no doc comment", fset.Position(missing.pos), missing.what)
			}
		}
	}
}

// missing is an exported name without a doc comment.
type missing struct {
	pos  token.Pos
	what string
}

// undocumented lists the exported names of f that have no doc comment.
func undocumented(f *ast.File) []missing {
	var out []missing
	add := func(pos token.Pos, what string) { out = append(out, missing{pos, what}) }
	for _, decl := range f.Decls {
		switch d := decl.(type) {
		case *ast.FuncDecl:
			if !d.Name.IsExported() || d.Doc != nil {
				continue
			}
			if d.Recv == nil {
				add(d.Pos(), "func "+d.Name.Name)
			} else if recv := receiverType(d.Recv); ast.IsExported(recv) {
				add(d.Pos(), "method "+recv+"."+d.Name.Name)
			}
		case *ast.GenDecl:
			grouped := d.Lparen.IsValid() && d.Doc != nil
			for _, spec := range d.Specs {
				switch s := spec.(type) {
				case *ast.TypeSpec:
					if !s.Name.IsExported() {
						continue
					}
					if s.Doc == nil && d.Doc == nil {
						add(s.Pos(), "type "+s.Name.Name)
					}
					out = append(out, undocumentedMembers(s)...)
				case *ast.ValueSpec:
					if s.Doc != nil || s.Comment != nil || grouped || (d.Doc != nil && len(d.Specs) == 1) {
						continue
					}
					for _, n := range s.Names {
						if n.IsExported() {
							add(n.Pos(), d.Tok.String()+" "+n.Name)
						}
					}
				}
			}
		}
	}
	return out
}

// undocumentedMembers lists the exported fields of an exported struct
// type, and the methods of an exported interface type, that have neither
// a doc comment nor a line comment.
func undocumentedMembers(s *ast.TypeSpec) []missing {
	var list *ast.FieldList
	kind := "field"
	switch typ := s.Type.(type) {
	case *ast.StructType:
		list = typ.Fields
	case *ast.InterfaceType:
		list, kind = typ.Methods, "method"
	default:
		return nil
	}
	var out []missing
	for _, field := range list.List {
		if field.Doc != nil || field.Comment != nil {
			continue
		}
		for _, n := range field.Names { // embedded fields have none
			if n.IsExported() {
				out = append(out, missing{n.Pos(), kind + " " + s.Name.Name + "." + n.Name})
			}
		}
	}
	return out
}

// receiverType is the name of a method's receiver type, without its
// pointer or type parameters.
func receiverType(recv *ast.FieldList) string {
	typ := recv.List[0].Type
	for {
		switch x := typ.(type) {
		case *ast.StarExpr:
			typ = x.X
		case *ast.IndexExpr:
			typ = x.X
		case *ast.IndexListExpr:
			typ = x.X
		case *ast.Ident:
			return x.Name
		default:
			return ""
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// walkFiles calls fn with the path of every file below the module root,
// but in hidden folders and node_modules (the npm SDK tests' packages).
func walkFiles(fn func(path string) error) error {
	return filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case !d.IsDir():
			return fn(path)
		case path != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules"):
			return filepath.SkipDir
		}
		return nil
	})
}

// markdownLink is a Markdown link's target, up to any #fragment.
var markdownLink = regexp.MustCompile(`\]\(([^)#\s]*)(#[^)\s]*)?\)`)

// TestMarkdownLinksResolve: every relative link in the module's Markdown
// files names a file or folder that exists, read from the linking file's
// folder as a Markdown viewer reads it.
func TestMarkdownLinksResolve(t *testing.T) {
	files := 0
	err := walkFiles(func(path string) error {
		if !strings.HasSuffix(path, ".md") {
			return nil
		}
		files++
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range markdownLink.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if target == "" || strings.Contains(target, ":") {
				continue // a fragment of this file, or a URL
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(path), target)); err != nil {
				t.Errorf("%s: link to %s: no such file from %s", path, target, filepath.Dir(path))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 5 {
		t.Fatalf("found %d Markdown files: is the test running at the module root?", files)
	}
}

// documentedTest is a test, fuzz target, benchmark or example named in
// backquotes in a Markdown file.
var documentedTest = regexp.MustCompile("`((?:Test|Fuzz|Benchmark|Example)[A-Z][A-Za-z0-9_]*)")

// TestDocumentedTestsExist: every test, fuzz target, benchmark or example
// that a Markdown file of the module names (SECURITY.md gives one for
// each guarantee) is a function of a test file, so that a renamed or
// removed test cannot leave a promise that cites it.
func TestDocumentedTestsExist(t *testing.T) {
	defined := map[string]bool{}
	named := map[string]string{} // test -> the first file naming it
	err := walkFiles(func(path string) error {
		switch {
		case strings.HasSuffix(path, "_test.go"):
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			for _, decl := range f.Decls {
				if fd, ok := decl.(*ast.FuncDecl); ok {
					defined[fd.Name.Name] = true
				}
			}
		case strings.HasSuffix(path, ".md"):
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range documentedTest.FindAllStringSubmatch(string(b), -1) {
				if _, ok := named[m[1]]; !ok {
					named[m[1]] = path
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(named) < 50 || !defined["TestDocumentedTestsExist"] {
		t.Fatalf("found %d tests named in Markdown files, %d defined: is the test running at the module root?", len(named), len(defined))
	}
	for _, name := range slices.Sorted(maps.Keys(named)) {
		if !defined[name] {
			t.Errorf("%s names %s, which no test file defines", named[name], name)
		}
	}
}
