package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func TestFlagOf(t *testing.T) {
	cases := []struct {
		setting badinput.Setting
		want    string
	}{
		{"migu_t", "--migu"},
		{"clip_norm", "--clip"},
		{"epochs", "--epochs"},
		{"val_samples", "--val-samples"},
		{"memory_limit", "--memory-limit"},
		{"ort_lib", "--ort-lib"},
		{"lora-r", "--lora-r"}, // an adapter option is its flag
		{"lora-targets", "--lora-targets"},
		{"beta1", "beta1"}, // file-only
		{"no_such_setting", "no_such_setting"},
	}
	for _, c := range cases {
		if got := flagOf(c.setting); got != c.want {
			t.Errorf("flagOf(%q) = %q, want %q", c.setting, got, c.want)
		}
	}
	err := badinput.Range("migu_t", 1.5, "[0, 1)")
	if got, want := badinput.Rename(err, flagOf), "--migu 1.5 is outside its range: [0, 1)"; got != want {
		t.Errorf("Rename = %q, want %q", got, want)
	}
}

// Every flag the table names exists on some command, and no setting is
// both mapped and file-only.
func TestSettingFlagsExist(t *testing.T) {
	flags := map[string]bool{}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) { flags["--"+f.Name] = true })
		c.PersistentFlags().VisitAll(func(f *pflag.Flag) { flags["--"+f.Name] = true })
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCmd())
	for s, f := range settingFlags {
		if !flags[f] {
			t.Errorf("setting %s maps to %s, which no command has", s, f)
		}
		if fileOnly[s] {
			t.Errorf("setting %s is both mapped to %s and file-only", s, f)
		}
	}
	for _, o := range adapters.AllOptions() {
		if !flags["--"+o.Name] {
			t.Errorf("adapter setting %s has no flag", o.Name)
		}
	}
}

// Every setting the library's errors name (scanned from its source) has a
// flag or is deliberately file-only, and the table names no setting the
// library does not use.
func TestLibrarySettingsHaveFlags(t *testing.T) {
	named, unresolved := librarySettings(t, testenv.Root())
	for _, u := range unresolved {
		t.Errorf("%s: badinput.Setting of a value that is not a constant: name settings by constants so this test can check them", u)
	}
	adapter := map[string]bool{}
	for _, o := range adapters.AllOptions() {
		adapter[o.Name] = true
	}
	for s, where := range named {
		if settingFlags[s] == "" && !fileOnly[s] && !adapter[string(s)] {
			t.Errorf("setting %q (%s) has no flag in settingFlags and is not in fileOnly", s, where)
		}
	}
	for s := range settingFlags {
		if named[s] == "" {
			t.Errorf("settingFlags maps %q, which no library error names", s)
		}
	}
	for s := range fileOnly {
		if named[s] == "" {
			t.Errorf("fileOnly lists %q, which no library error names", s)
		}
	}
	if len(named) < 40 {
		t.Errorf("found only %d settings; is the scan broken?", len(named))
	}
}

// librarySettings finds the settings named in the library's Go source
// (everything but cmd/, benchmarks/ and tests): badinput.Setting
// conversions, constants of that type, and the constant arguments of
// functions with a badinput.Setting parameter (badinput.Range,
// ort.CheckThreads, …). It returns each setting with one place naming it,
// and the places that convert a value no constant gives.
func librarySettings(t *testing.T, root string) (map[badinput.Setting]string, []string) {
	t.Helper()
	fset := token.NewFileSet()
	type file struct {
		dir string
		f   *ast.File
	}
	var files []file
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || slices.Contains([]string{"cmd", "benchmarks", "python", "scripts"}, rel)) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files = append(files, file{filepath.Dir(rel), f})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// isSetting reports whether e names the type badinput.Setting in
	// package pkg.
	isSetting := func(e ast.Expr, pkg string) bool {
		if sel, ok := e.(*ast.SelectorExpr); ok {
			x, _ := sel.X.(*ast.Ident)
			return x != nil && x.Name == "badinput" && sel.Sel.Name == "Setting"
		}
		id, ok := e.(*ast.Ident)
		return ok && pkg == "badinput" && id.Name == "Setting"
	}
	// Pass 1: string constants by package name, and functions' Setting
	// parameters by function name.
	consts := map[string]map[string]string{} // package name → constant → value
	params := map[string][]int{}             // function name → parameter indices
	named := map[badinput.Setting]string{}
	for _, fl := range files {
		pkg := fl.f.Name.Name
		if consts[pkg] == nil {
			consts[pkg] = map[string]string{}
		}
		for _, decl := range fl.f.Decls {
			switch d := decl.(type) {
			case *ast.GenDecl:
				if d.Tok != token.CONST {
					continue
				}
				for _, spec := range d.Specs {
					vs := spec.(*ast.ValueSpec)
					for i, n := range vs.Names {
						if i >= len(vs.Values) {
							continue
						}
						lit, ok := vs.Values[i].(*ast.BasicLit)
						if !ok || lit.Kind != token.STRING {
							continue
						}
						v, _ := strconv.Unquote(lit.Value)
						consts[pkg][n.Name] = v
						if vs.Type != nil && isSetting(vs.Type, pkg) {
							named[badinput.Setting(v)] = fset.Position(n.Pos()).String()
						}
					}
				}
			case *ast.FuncDecl:
				i := 0
				for _, field := range d.Type.Params.List {
					n := max(len(field.Names), 1)
					if isSetting(field.Type, pkg) {
						for k := range n {
							params[d.Name.Name] = append(params[d.Name.Name], i+k)
						}
					}
					i += n
				}
			}
		}
	}
	// Pass 2: the settings given where a Setting is expected.
	var unresolved []string
	for _, fl := range files {
		pkg := fl.f.Name.Name
		value := func(e ast.Expr) (string, bool) {
			switch e := e.(type) {
			case *ast.BasicLit:
				v, err := strconv.Unquote(e.Value)
				return v, err == nil
			case *ast.Ident:
				v, ok := consts[pkg][e.Name]
				return v, ok
			case *ast.SelectorExpr:
				if x, ok := e.X.(*ast.Ident); ok {
					v, ok := consts[x.Name][e.Sel.Name]
					return v, ok
				}
			}
			return "", false
		}
		ast.Inspect(fl.f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			var idx []int
			conversion := isSetting(call.Fun, pkg) && len(call.Args) == 1
			if conversion {
				idx = []int{0}
			} else {
				switch f := call.Fun.(type) {
				case *ast.Ident:
					idx = params[f.Name]
				case *ast.SelectorExpr:
					idx = params[f.Sel.Name]
				}
			}
			for _, i := range idx {
				if i >= len(call.Args) {
					continue
				}
				where := fset.Position(call.Args[i].Pos()).String()
				if v, ok := value(call.Args[i]); ok {
					named[badinput.Setting(v)] = where
				} else if conversion {
					unresolved = append(unresolved, where)
				}
				// A variable passed on (a Setting parameter handed to
				// badinput.Range) was checked where it was given.
			}
			return true
		})
	}
	return named, unresolved
}
