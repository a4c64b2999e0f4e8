package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// copyTree copies the named files and directories of the repository root into dst.
func copyTree(t *testing.T, dst string, names ...string) {
	t.Helper()
	root := filepath.Join("..", "..")
	for _, name := range names {
		src := filepath.Join(root, name)
		err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if d.IsDir() {
				return os.MkdirAll(filepath.Join(dst, rel), 0o755)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestNewAuthority scaffolds an authority into a copy of the repository and checks that everything
// it wrote builds, passes buf lint and its own test, and that the policies still lint and test.
func TestNewAuthority(t *testing.T) {
	repo := t.TempDir()
	copyTree(t, repo, "go.mod", "go.sum", "buf.yaml", "buf.gen.yaml", "proto", "services", "policies")

	out := aperture(t, 0, "new", "authority", "library", "--dataset", "book_loans", "--repo", repo)
	for _, want := range []string{"proto/aperture/library/v1/library.proto", "services/library/library.go", "policies/tests/library.yaml", "registry.yaml (entry added)"} {
		if !strings.Contains(out, want) {
			t.Errorf("new authority output lacks %q:\n%s", want, out)
		}
	}
	goCmd := func(args ...string) {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = repo
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
		}
	}
	goCmd("tool", "buf", "lint", "--path", "proto/aperture/library")
	goCmd("tool", "buf", "generate", "--path", "proto/aperture/library")
	goCmd("vet", "./services/library/")
	goCmd("test", "./services/library/") // the lookup answers Unimplemented

	out = aperture(t, 0, "policy", "lint", filepath.Join(repo, "policies"))
	if !strings.Contains(out, `warning: authority "library" is used by no step`) || !strings.Contains(out, "0 errors, 1 warning") {
		t.Errorf("lint after scaffolding printed:\n%s", out)
	}
	out = aperture(t, 0, "policy", "test", "-v", filepath.Join(repo, "policies"))
	if !strings.Contains(out, "library.book_loans is released nowhere until a journey names it") {
		t.Errorf("policy test after scaffolding printed:\n%s", out)
	}

	// Nothing is overwritten, and names that cannot be a Go package are refused.
	aperture(t, 1, "new", "authority", "library", "--repo", repo)
	aperture(t, 2, "new", "authority", "Lib-rary", "--repo", repo)
	aperture(t, 2, "new", "thing", "x")
}
