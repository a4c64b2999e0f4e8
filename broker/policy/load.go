package policy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"buf.build/go/protovalidate"
	"cel.dev/cel-go/cel"
	"google.golang.org/protobuf/reflect/protoreflect"

	policyv1 "github.com/aperture-gov/aperture/proto/aperture/policy/v1"
	"github.com/aperture-gov/aperture/services/kit/derive"
	"github.com/aperture-gov/aperture/services/kit/fieldmask"
)

// journeyDir holds the journey files within the policy tree.
const journeyDir = "journeys"

// LoadRegistry reads and checks the registry file name (usually "registry.yaml") from fsys. A
// registry with findings is an error of type *LoadError.
func LoadRegistry(fsys fs.FS, name string) (*Registry, error) {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("read registry: %w", err)
	}
	v, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("load registry: %w", err)
	}
	var fnd findings
	var pb policyv1.Registry
	src := decode(file{name: name, data: data}, &pb, v, &fnd)
	if src == nil {
		return nil, fnd.err()
	}
	reg := &Registry{source: file{name: name, data: data}}
	identities := map[string][]any{}
	checkIdentity := func(id string, p []any) {
		if id == "" {
			return
		}
		if u, err := url.Parse(id); err != nil || u.Scheme != "spiffe" || u.Host == "" || len(u.Path) < 2 || u.RawQuery != "" || u.Fragment != "" {
			src.at(p, "identity %q is not a SPIFFE id (spiffe://trust-domain/path)", id)
		}
		if first, dup := identities[id]; dup {
			src.at(p, "identity %q is already used at line %d: every party needs its own certificate identity", id, src.node(first...).Line)
			return
		}
		identities[id] = p
	}
	ids := map[string]int{}
	for i, a := range pb.GetAuthorities() {
		p := []any{"authorities", i}
		if j, dup := ids[a.GetId()]; dup {
			src.at(append(p, "id"), "authority id %q is used twice (first at line %d)", a.GetId(), src.node("authorities", j, "id").Line)
		} else {
			ids[a.GetId()] = i
		}
		if _, _, err := net.SplitHostPort(a.GetAddress()); err != nil && a.GetAddress() != "" {
			src.at(append(p, "address"), "address %q is not host:port", a.GetAddress())
		}
		checkIdentity(a.GetIdentity(), append(p, "identity"))
		reg.Authorities = append(reg.Authorities, &Authority{
			ID: a.GetId(), Name: text(a.GetName()), Address: a.GetAddress(), Identity: a.GetIdentity(),
			Datasets: slices.Clone(a.GetDatasets()),
		})
	}
	agencies := func(key string, list []*policyv1.Agency) []*Agency {
		var out []*Agency
		ids := map[string]int{}
		for i, a := range list {
			p := []any{key, i}
			if j, dup := ids[a.GetId()]; dup {
				src.at(append(p, "id"), "id %q is used twice in %s (first at line %d)", a.GetId(), key, src.node(key, j, "id").Line)
			} else {
				ids[a.GetId()] = i
			}
			checkIdentity(a.GetIdentity(), append(p, "identity"))
			out = append(out, &Agency{ID: a.GetId(), Name: text(a.GetName()), Identity: a.GetIdentity()})
		}
		return out
	}
	reg.Agencies = agencies("agencies", pb.GetAgencies())
	reg.Auditors = agencies("auditors", pb.GetAuditors())
	// dataset checks that a register the registry names is a dataset of one of its authorities.
	dataset := func(key, authority, ds string) (DatasetRef, bool) {
		a, ok := reg.Authority(authority)
		switch {
		case !ok:
			src.at([]any{key, "authority"}, "%s: authority %q is not in the registry", key, authority)
		case !slices.Contains(a.Datasets, ds):
			src.at([]any{key, "dataset"}, "%s: authority %q serves no dataset %q", key, authority, ds)
		default:
			return DatasetRef{Authority: authority, Dataset: ds}, true
		}
		return DatasetRef{}, false
	}
	if cr := pb.GetCitizenRegister(); cr != nil {
		if ref, ok := dataset("citizen_register", cr.GetAuthority(), cr.GetDataset()); ok {
			reg.CitizenRegister = &ref
		}
	}
	if pc := pb.GetParentalCustody(); pc != nil {
		if ref, ok := dataset("parental_custody", pc.GetAuthority(), pc.GetDataset()); ok {
			reg.ParentalCustody = &ParentalCustody{DatasetRef: ref, Field: pc.GetField(), AgeOfMajority: int(pc.GetAgeOfMajority())}
		}
	}
	if err := fnd.err(); err != nil {
		return nil, err
	}
	return reg, nil
}

func text(t *policyv1.Text) Text { return Text{EN: t.GetEn(), DA: t.GetDa()} }

// LoadBundle reads every journeys/*.yaml from fsys and checks it against reg and descs: ids, agencies,
// datasets, field paths (fieldmask.Validate) and derived-fact expressions (derive.NewEnv, Compile).
// The bundle's Version is "sha256:" and the first 16 hex digits of a SHA-256 over the registry file and
// the journey files, sorted by name, each hashed with its name, so equal policy text gives an equal
// version. (A Registry built in code rather than by LoadRegistry has no file, and the version then
// covers the journeys only.) All findings of all files are returned together as a *LoadError.
func LoadBundle(fsys fs.FS, reg *Registry, descs Descriptors) (*Bundle, error) {
	if reg == nil || descs == nil {
		return nil, errors.New("load policies: registry and descriptors are required")
	}
	names, err := fs.Glob(fsys, journeyDir+"/*.yaml")
	if err != nil {
		return nil, fmt.Errorf("load policies: %w", err)
	}
	v, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("load policies: %w", err)
	}
	var fnd findings
	if len(names) == 0 {
		fnd = append(fnd, Finding{File: journeyDir, Message: "no journey files (*.yaml)"})
	}
	files := []file{}
	if reg.source.name != "" {
		files = append(files, reg.source)
	}
	l := &loader{reg: reg, descs: descs, validator: v, findings: &fnd, envs: map[string]*datasetEnv{}}
	b := &Bundle{Registry: reg}
	for _, name := range names {
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			fnd = append(fnd, Finding{File: name, Message: fmt.Sprintf("cannot read: %v", err)})
			continue
		}
		files = append(files, file{name: name, data: data})
		if j := l.journey(file{name: name, data: data}); j != nil {
			b.journeys = append(b.journeys, j)
		}
	}
	if pc := reg.ParentalCustody; pc != nil {
		if err := pc.check(descs); err != nil {
			fnd = append(fnd, Finding{File: reg.source.name, Message: err.Error()})
		}
	}
	if ef, events := l.loadEvents(fsys, b.journeys, names); ef != nil {
		files = append(files, *ef)
		b.events = events
	}
	if err := fnd.err(); err != nil {
		return nil, err
	}
	slices.SortFunc(b.journeys, func(a, b *Journey) int { return strings.Compare(a.ID, b.ID) })
	b.Version = version(files)
	return b, nil
}

// version hashes the policy files, sorted by name, each as length-prefixed name and bytes (so that no
// two different trees hash the same stream).
func version(files []file) string {
	slices.SortFunc(files, func(a, b file) int { return strings.Compare(a.name, b.name) })
	h := sha256.New()
	var n [8]byte
	for _, f := range files {
		binary.BigEndian.PutUint64(n[:], uint64(len(f.name)))
		h.Write(n[:])
		h.Write([]byte(f.name))
		binary.BigEndian.PutUint64(n[:], uint64(len(f.data)))
		h.Write(n[:])
		h.Write(f.data)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:16]
}

// loader checks journeys against one registry and one set of descriptors.
type loader struct {
	reg       *Registry
	descs     Descriptors
	validator protovalidate.Validator
	findings  *findings
	envs      map[string]*datasetEnv // by "authority.dataset"
}

// datasetEnv is a dataset's message and its CEL environment, built once per load.
type datasetEnv struct {
	md  protoreflect.MessageDescriptor
	env *cel.Env
	err error
}

func (l *loader) dataset(authority, dataset string) *datasetEnv {
	key := authority + "." + dataset
	if e, ok := l.envs[key]; ok {
		return e
	}
	e := &datasetEnv{}
	if e.md, e.err = l.descs.Dataset(authority, dataset); e.err == nil && e.md == nil {
		e.err = errors.New("no message descriptor")
	}
	if e.err == nil {
		e.env, e.err = derive.NewEnv(e.md)
	}
	l.envs[key] = e
	return e
}

// journey decodes and checks one journey file; it returns nil when the file has findings.
func (l *loader) journey(f file) *Journey {
	before := len(*l.findings)
	var pb policyv1.Journey
	src := decode(f, &pb, l.validator, l.findings)
	if src == nil {
		return nil
	}
	j := &Journey{ID: pb.GetId(), Title: text(pb.GetTitle()), Description: text(pb.GetDescription()), File: f.name}
	if o := pb.GetOptional(); o != nil {
		j.Optional = &Optional{Why: text(o.GetWhy())}
	}
	if want := strings.TrimSuffix(path.Base(f.name), ".yaml"); pb.GetId() != want {
		src.at([]any{"id"}, "journey id %q does not match the file name: want %q", pb.GetId(), want)
	}
	stepAt := map[string]int{}
	for i, sp := range pb.GetSteps() {
		j.Steps = append(j.Steps, l.step(src, j.ID, i, sp, stepAt))
	}
	if j.Optional != nil {
		for i, s := range j.Steps {
			if s.Covert != nil {
				src.at([]any{"steps", i, "covert"}, "journey %q is optional and step %q is covert: switching the journey off would stop an investigation, and the switch would reveal it; make the step mandatory in a journey of its own", j.ID, s.ID)
			}
		}
	}
	agencyAt := map[string]int{}
	for i, bp := range pb.GetBreakGlass() {
		if bg := l.breakGlass(src, j.ID, i, bp); bg != nil {
			if first, dup := agencyAt[bg.Agency]; dup {
				src.at([]any{"break_glass", i, "agency"}, "agency %q has two break-glass rules (first at line %d): merge them", bg.Agency, src.node("break_glass", first, "agency").Line)
				continue
			}
			agencyAt[bg.Agency] = i
			j.BreakGlass = append(j.BreakGlass, bg)
		}
	}
	if len(*l.findings) > before {
		return nil
	}
	return j
}

func (l *loader) step(src *source, journey string, i int, sp *policyv1.Step, stepAt map[string]int) *Step {
	p := func(rest ...any) []any { return append([]any{"steps", i}, rest...) }
	s := &Step{
		ID: sp.GetId(), Title: text(sp.GetTitle()), Agency: sp.GetAgency(), Role: sp.GetRole(),
		Purpose: text(sp.GetPurpose()), LegalBasis: sp.GetLegalBasis(), journey: journey,
	}
	if first, dup := stepAt[s.ID]; dup {
		src.at(p("id"), "step id %q is used twice (first at line %d)", s.ID, src.node("steps", first, "id").Line)
	} else {
		stepAt[s.ID] = i
	}
	if _, ok := l.reg.Agency(s.Agency); !ok && s.Agency != "" {
		ids := make([]string, len(l.reg.Agencies))
		for k, a := range l.reg.Agencies {
			ids[k] = a.ID
		}
		src.at(p("agency"), "agency %q is not in the registry%s", s.Agency, didYouMean(s.Agency, ids))
	}
	if c := sp.GetConsent(); c.GetRequired() {
		if c.GetDefaultDays() <= 0 || c.GetMaxDays() <= 0 {
			src.at(p("consent"), "consent is required, so default_days and max_days must be set")
		}
		s.Consent = &Consent{DefaultDays: int(c.GetDefaultDays()), MaxDays: int(c.GetMaxDays())}
	}
	if c := sp.GetCovert(); c != nil {
		s.Covert = &Covert{Reason: text(c.GetReason()), MaxDays: int(c.GetMaxDays()), Reveal: Reveal(c.GetReveal())}
		if s.Covert.Reveal == "" {
			s.Covert.Reveal = RevealCaseClosed
		}
		if s.Consent != nil {
			src.at(p("covert"), "step %q is covert and requires consent: asking the citizen would reveal it; drop one of the two", s.ID)
		}
	}
	if o := sp.GetOptional(); o != nil {
		s.Optional = &Optional{Why: text(o.GetWhy())}
		if s.Covert != nil {
			src.at(p("optional"), "step %q is covert and optional: switching it off would stop an investigation, and the switch would reveal it; drop one of the two", s.ID)
		}
	}
	ruleAt := map[string]int{}
	for k, rp := range sp.GetReleases() {
		if r := l.rule(src, p("releases", k), rp); r != nil {
			key := r.Authority + "." + r.Dataset
			if first, dup := ruleAt[key]; dup {
				src.at(p("releases", k, "dataset"), "dataset %s has two rules in step %q (first at line %d): merge them",
					key, s.ID, src.node("steps", i, "releases", first, "dataset").Line)
				continue
			}
			ruleAt[key] = k
			s.Rules = append(s.Rules, r)
		}
	}
	return s
}

// breakGlass checks one break-glass rule of journey; it returns nil when it has findings.
func (l *loader) breakGlass(src *source, journey string, i int, bp *policyv1.BreakGlass) *BreakGlass {
	before := len(*l.findings)
	p := func(rest ...any) []any { return append([]any{"break_glass", i}, rest...) }
	bg := &BreakGlass{
		Agency: bp.GetAgency(), Purpose: text(bp.GetPurpose()), LegalBasis: bp.GetLegalBasis(),
		Limit: int(bp.GetMaxPerCaseworker()), Window: time.Duration(bp.GetWindowHours()) * time.Hour,
	}
	if _, ok := l.reg.Agency(bg.Agency); !ok && bg.Agency != "" {
		ids := make([]string, len(l.reg.Agencies))
		for k, a := range l.reg.Agencies {
			ids[k] = a.ID
		}
		src.at(p("agency"), "agency %q is not in the registry%s", bg.Agency, didYouMean(bg.Agency, ids))
	}
	codeAt := map[string]int{}
	for k, rp := range bp.GetReasons() {
		if first, dup := codeAt[rp.GetCode()]; dup {
			src.at(p("reasons", k, "code"), "reason code %q is used twice (first at line %d)", rp.GetCode(), src.node(p("reasons", first, "code")...).Line)
			continue
		}
		codeAt[rp.GetCode()] = k
		bg.Reasons = append(bg.Reasons, &BreakGlassReason{Code: rp.GetCode(), Title: text(rp.GetTitle())})
	}
	ruleAt := map[string]int{}
	for k, rp := range bp.GetReleases() {
		r := l.rule(src, p("releases", k), rp)
		if r == nil {
			continue
		}
		key := r.Authority + "." + r.Dataset
		if first, dup := ruleAt[key]; dup {
			src.at(p("releases", k, "dataset"), "dataset %s has two break-glass rules for agency %q (first at line %d): merge them",
				key, bg.Agency, src.node(p("releases", first, "dataset")...).Line)
			continue
		}
		ruleAt[key] = k
		bg.Rules = append(bg.Rules, r)
	}
	if len(*l.findings) > before {
		return nil
	}
	bg.step = &Step{ID: BreakGlassStep, Title: Text{EN: "Break-glass", DA: "Nødadgang"}, Agency: bg.Agency,
		Purpose: bg.Purpose, LegalBasis: bg.LegalBasis, Rules: bg.Rules, journey: journey}
	return bg
}

// checkFactType reports a fact whose declared type is missing, incomplete or not what its expression
// yields. Only a bool, a bounded int or an enum is a fact; a string or a record discloses a value, and
// the policy must say why (value_reason), so that a reviewer sees it.
func checkFactType(src *source, p []any, dp *policyv1.Derived, out *cel.Type) {
	at := func(rest ...any) []any { return append(slices.Clone(p), rest...) }
	name := dp.GetName()
	isInt := out.IsExactType(cel.IntType) || out.IsExactType(cel.UintType)
	isString := out.IsExactType(cel.StringType)
	switch dp.GetType() {
	case "":
		suggest := "bool, int with a range, or enum with values"
		switch {
		case out.IsExactType(cel.BoolType):
			suggest = "type: bool"
		case isInt:
			suggest = "type: int and its range: {min: …, max: …}"
		case isString:
			suggest = "type: enum and its values: […], or type: string with a value_reason"
		}
		src.at(at("expression"), "derived fact %q has no type: its expression yields %s; declare %s", name, out, suggest)
		return
	case FactBool:
		if !out.IsExactType(cel.BoolType) {
			src.at(at("type"), "derived fact %q is declared bool, but its expression yields %s", name, out)
		}
	case FactInt:
		if !isInt {
			src.at(at("type"), "derived fact %q is declared int, but its expression yields %s", name, out)
		}
		if dp.GetRange() == nil {
			src.at(at("type"), "derived fact %q is an int without a range: declare range: {min: …, max: …}, the values the step may learn", name)
		}
	case FactEnum:
		if !isString {
			src.at(at("type"), "derived fact %q is declared enum, but its expression yields %s (an enum fact is a string, one of its values)", name, out)
		}
		if len(dp.GetValues()) == 0 {
			src.at(at("type"), "derived fact %q is an enum without values: list the values it can take", name)
		}
	case FactString:
		if !isString {
			src.at(at("type"), "derived fact %q is declared string, but its expression yields %s", name, out)
		}
	case FactRecord:
		if !derive.Record(out) {
			src.at(at("type"), "derived fact %q is declared record, but its expression yields %s (a record is a list, map or message)", name, out)
		}
	}
	switch kind := dp.GetType(); {
	case (kind == FactString || kind == FactRecord) && dp.GetValueReason() == nil:
		src.at(at("type"), "derived fact %q is %s-valued: it discloses a value, not a fact; make it a bool, a bounded int or an enum, or say why the step needs the value in value_reason", name, kind)
	case kind != FactString && kind != FactRecord && dp.GetValueReason() != nil:
		src.at(at("value_reason"), "derived fact %q has a value_reason but is a %s: only a string or record fact needs one", name, kind)
	}
	if dp.GetRange() != nil && dp.GetType() != FactInt {
		src.at(at("range"), "derived fact %q has a range but is not an int", name)
	}
	if len(dp.GetValues()) > 0 && dp.GetType() != FactEnum {
		src.at(at("values"), "derived fact %q has values but is not an enum", name)
	}
}

// fieldNames lists every field name of md and the messages it contains, for "did you mean" on a
// misspelt field in an expression.
func fieldNames(md protoreflect.MessageDescriptor) []string {
	seen := map[protoreflect.FullName]bool{}
	names := map[string]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		for i := range md.Fields().Len() {
			f := md.Fields().Get(i)
			names[string(f.Name())] = true
			if f.IsMap() {
				f = f.MapValue()
			}
			if f.Message() != nil && !strings.HasPrefix(string(f.Message().FullName()), "google.protobuf.") {
				walk(f.Message())
			}
		}
	}
	walk(md)
	return slices.Sorted(maps.Keys(names))
}

// rule checks one release rule; it returns nil when the dataset itself cannot be resolved.
func (l *loader) rule(src *source, p []any, rp *policyv1.ReleaseRule) *Rule {
	at := func(rest ...any) []any { return append(slices.Clone(p), rest...) }
	if len(rp.GetFields()) == 0 && len(rp.GetDerived()) == 0 {
		src.at(p, "the rule for %s releases nothing: list fields or derived facts, or remove it", rp.GetDataset())
	}
	authority, dataset, ok := strings.Cut(rp.GetDataset(), ".")
	if !ok || authority == "" || dataset == "" {
		src.at(at("dataset"), "dataset %q must be written \"authority.dataset\", e.g. \"tax.income\"", rp.GetDataset())
		return nil
	}
	a, ok := l.reg.Authority(authority)
	if !ok {
		ids := make([]string, len(l.reg.Authorities))
		for k, a := range l.reg.Authorities {
			ids[k] = a.ID
		}
		src.at(at("dataset"), "authority %q is not in the registry%s", authority, didYouMean(authority, ids))
		return nil
	}
	if !slices.Contains(a.Datasets, dataset) {
		src.at(at("dataset"), "authority %q serves no dataset %q (it serves %s)%s",
			authority, dataset, strings.Join(a.Datasets, ", "), didYouMean(dataset, a.Datasets))
		return nil
	}
	de := l.dataset(authority, dataset)
	if de.err != nil {
		src.at(at("dataset"), "dataset %s: %v", rp.GetDataset(), de.err)
		return nil
	}
	r := &Rule{Authority: authority, Dataset: dataset, Message: de.md}
	for k, f := range rp.GetFields() {
		if err := fieldmask.Validate(de.md, f); err != nil {
			src.at(at("fields", k), "%s: %v", rp.GetDataset(), err)
		}
	}
	r.Fields = fieldmask.Normalize(rp.GetFields())
	nameAt := map[string]int{}
	for k, dp := range rp.GetDerived() {
		if first, dup := nameAt[dp.GetName()]; dup {
			src.at(at("derived", k, "name"), "derived fact %q is defined twice for %s (first at line %d)",
				dp.GetName(), rp.GetDataset(), src.node(at("derived", first, "name")...).Line)
		} else {
			nameAt[dp.GetName()] = k
		}
		d := &Derived{Name: dp.GetName(), Description: text(dp.GetDescription()), Expression: dp.GetExpression(),
			Type: FactType{Kind: dp.GetType(), Min: dp.GetRange().GetMin(), Max: dp.GetRange().GetMax(),
				Values: slices.Clone(dp.GetValues()), ValueReason: text(dp.GetValueReason())},
			CitizenSeesAnswer: dp.CitizenSeesAnswer == nil || dp.GetCitizenSeesAnswer(), HiddenAnswerReason: text(dp.GetHiddenAnswerReason())}
		if dp.GetHiddenAnswerReason() != nil && d.CitizenSeesAnswer {
			src.at(at("derived", k, "hidden_answer_reason"), "derived fact %q has a hidden_answer_reason but the citizen sees its answer: set citizen_sees_answer: false, or remove the reason", dp.GetName())
		}
		if dp.GetExpression() != "" {
			if c, err := derive.Check(de.env, dp.GetExpression()); err != nil {
				src.celFindings(at("derived", k, "expression"), dp.GetExpression(), err,
					fmt.Sprintf("derived fact %q: ", dp.GetName()), fieldNames(de.md))
			} else {
				d.ResultType, d.Reads = c.Type.String(), c.Reads
				checkFactType(src, at("derived", k), dp, c.Type)
			}
		}
		r.Derived = append(r.Derived, d)
	}
	return r
}
