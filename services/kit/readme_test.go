package kit_test

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeExample checks that the Go example in services/README.md is the compiled one in
// example_test.go.
func TestReadmeExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	between := func(s, begin, end string) string {
		_, after, ok := strings.Cut(s, begin)
		if !ok {
			t.Fatalf("marker %q not found", begin)
		}
		inner, _, ok := strings.Cut(after, end)
		if !ok {
			t.Fatalf("marker %q not found", end)
		}
		return strings.TrimSpace(inner)
	}
	want := between(string(src), "// README BEGIN", "// README END")
	got := between(string(readme), "```go", "```")
	if got != want {
		t.Errorf("services/README.md example differs from example_test.go; copy it over.\nREADME:\n%s\n\nexample_test.go:\n%s", got, want)
	}
}
