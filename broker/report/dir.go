package report

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// Dir is a directory of published reports: every *.json file in it is one report in its JSON form.
type Dir string

// Reports reads every report in the directory. A file that is not a report is left out and named in
// the error; the others are returned.
func (d Dir) Reports() ([]*Report, error) {
	names, err := filepath.Glob(filepath.Join(string(d), "*.json"))
	if err != nil {
		return nil, fmt.Errorf("published reports: %w", err)
	}
	sort.Strings(names)
	var out []*Report
	var errs []error
	for _, n := range names {
		f, err := os.Open(n)
		if err != nil {
			errs = append(errs, fmt.Errorf("published report %s: %w", filepath.Base(n), err))
			continue
		}
		r, err := Decode(f)
		f.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("published report %s: %w", filepath.Base(n), err))
			continue
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}
