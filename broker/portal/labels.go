package portal

import (
	"net/http"
	"strings"
	"time"

	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// labelSet is how to name every authority dataset, field and enum value, as the authorities declare
// it in their protos (the citizen API's ListDatasets). It is policy data, the same for everyone, and
// is kept as long as the catalogue.
type labelSet map[string]*datasetLabels // by "authority/dataset"

type datasetLabels struct {
	label  *citizenv1.Text
	fields map[string]*citizenv1.FieldLabel // by field path
	order  []*citizenv1.FieldLabel          // as declared: by field number, parents first
}

func labelKey(authority, dataset string) string { return authority + "/" + dataset }

// labels returns the label set, read through the API at most once per CatalogTTL. Without it (the API
// failed) the portal still works and falls back to words made from the field names; the failure is
// logged, and retried on the next page.
func (p *Portal) labels(r *http.Request, v *view) labelSet {
	p.labMu.Lock()
	defer p.labMu.Unlock()
	if p.lab != nil && p.cfg.CatalogTTL > 0 && time.Since(p.labAt) < p.cfg.CatalogTTL {
		return p.lab
	}
	res, err := p.cfg.Citizen.ListDatasets(v.ctx(r), &citizenv1.ListDatasetsRequest{})
	if err != nil {
		p.log.Warn("portal: dataset labels unavailable; showing field names", "route", r.Pattern, "code", codeOf(err))
		return p.lab // the last good set, if any
	}
	set := labelSetOf(res)
	p.lab, p.labAt = set, time.Now()
	return set
}

// labelSetOf indexes the citizen API's dataset labels.
func labelSetOf(res *citizenv1.ListDatasetsResponse) labelSet {
	set := labelSet{}
	for _, d := range res.GetDatasets() {
		dl := &datasetLabels{label: d.GetLabel(), fields: map[string]*citizenv1.FieldLabel{}, order: d.GetFields()}
		for _, f := range d.GetFields() {
			dl.fields[f.GetPath()] = f
		}
		set[labelKey(d.GetAuthority().GetId(), d.GetDataset())] = dl
	}
	return set
}

// DatasetName names an authority's dataset: its label, or words made from its name.
func (v *view) DatasetName(authority, dataset string) string {
	if dl := v.lab[labelKey(authority, dataset)]; dl != nil {
		if s := v.Tx(dl.label); s != "" {
			return s
		}
	}
	return upperFirst(humanField(dataset))
}

// fieldLabel returns what the authority says about one field path of a dataset; nil if nothing.
func (v *view) fieldLabel(authority, dataset, path string) *citizenv1.FieldLabel {
	if dl := v.lab[labelKey(authority, dataset)]; dl != nil {
		return dl.fields[path]
	}
	return nil
}

// FieldName names a field path of a dataset by the labels of its segments, the record first:
// "Address › town", "Adresse › by". A segment without a label is made into words.
func (v *view) FieldName(authority, dataset, path string) string {
	segs := strings.Split(path, ".")
	out := make([]string, len(segs))
	for i := range segs {
		name := v.Tx(v.fieldLabel(authority, dataset, strings.Join(segs[:i+1], ".")).GetLabel())
		if name == "" {
			name = humanKey(segs[i])
		}
		if i > 0 {
			name = lowerFirst(name)
		}
		out[i] = name
	}
	return strings.Join(out, " › ")
}

// ValueName names an enum value of a field: its label, or words made from the constant.
func (v *view) ValueName(fl *citizenv1.FieldLabel, name string) string {
	for _, ev := range fl.GetValues() {
		if ev.GetName() == name {
			if s := v.Tx(ev.GetLabel()); s != "" {
				return s
			}
		}
	}
	return enumWords(fl.GetValues(), name)
}

// enumWords makes a constant without a label readable: the prefix all values share is dropped
// ("CIVIL_STATUS_MARRIED" → "Married").
func enumWords(values []*citizenv1.ValueLabel, name string) string {
	prefix := ""
	if len(values) > 1 {
		prefix = values[0].GetName()
		for _, ev := range values[1:] {
			for !strings.HasPrefix(ev.GetName(), prefix) {
				prefix = prefix[:len(prefix)-1]
			}
		}
		prefix = prefix[:strings.LastIndex(prefix, "_")+1]
	}
	return humanKey(strings.ToLower(strings.TrimPrefix(name, prefix)))
}
