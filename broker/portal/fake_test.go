package portal

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The test double of the citizen API: a CitizenServiceServer with fixed, plausible data, served over
// real gRPC on a loopback listener. It checks the bearer token like the real one (a foreign token is
// UNAUTHENTICATED), records every request with its token, and can be told to fail a method.

const testToken = "tok-karen-0123456789"

var testNow = time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)

func ts(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

func txt(en, da string) *citizenv1.Text { return &citizenv1.Text{En: en, Da: da} }

func accID(n int) string  { return fmt.Sprintf("acc_%026d", n) }
func caseID(n int) string { return fmt.Sprintf("case_%026d", n) }

var (
	partyTax        = &citizenv1.Party{Id: "tax", Name: txt("Danish Tax Agency", "Skattestyrelsen")}
	partyTaxIncome  = &citizenv1.Party{Id: "tax", Name: txt("Danish Tax Agency — income register", "Skatteforvaltningen — indkomstregistret")}
	partyMunicipal  = &citizenv1.Party{Id: "municipality", Name: txt("Copenhagen Municipality (Jobcentre)", "Københavns Kommune (Jobcenter)")}
	partyHealth     = &citizenv1.Party{Id: "health", Name: txt("Health data (general practice and sick notes)", "Sundhedsdata (almen praksis og lægeerklæringer)")}
	partyPopulation = &citizenv1.Party{Id: "population", Name: txt("Civil Registration System (CPR)", "Det Centrale Personregister (CPR)")}
	partyEmployment = &citizenv1.Party{Id: "employment", Name: txt("Employment register", "Beskæftigelsesregistret")}

	journeySick   = &citizenv1.JourneyRef{Id: "sickness-benefit", Title: txt("Sickness benefit", "Sygedagpenge")}
	journeyMoving = &citizenv1.JourneyRef{Id: "moving-house", Title: txt("Moving house", "Flytning")}

	stepRegister = &citizenv1.StepRef{Id: "register-absence", Title: txt("Register the sick leave", "Registrér sygefraværet"), Number: 1}
	stepEmployed = &citizenv1.StepRef{Id: "check-employment-requirement", Title: txt("Check the employment requirement", "Tjek beskæftigelseskravet"), Number: 2}
	stepCapacity = &citizenv1.StepRef{Id: "assess-work-capacity", Title: txt("Assess work capacity", "Vurdér arbejdsevnen"), Number: 3}
	stepFraud    = &citizenv1.StepRef{Id: "check-for-fraud", Title: txt("Check for benefit fraud", "Kontrol for socialt bedrageri"), Number: 4}

	factThreshold = &citizenv1.Fact{Name: "earned_above_threshold_6_of_12", Description: txt("Your income was above the threshold in 6 of the last 12 months", "Din indkomst var over grænsen i 6 af de sidste 12 måneder")}
	factEmployed  = &citizenv1.Fact{Name: "currently_employed", Description: txt("Whether you are employed now", "Om du er i arbejde nu")}
)

func sickPath() *citizenv1.GetDataPathResponse {
	return &citizenv1.GetDataPathResponse{
		Journey:       journeySick,
		Description:   txt("You are sick and cannot work. The jobcentre follows up and pays sickness benefit.", "Du er syg og kan ikke arbejde. Jobcentret følger op og udbetaler sygedagpenge."),
		PolicyVersion: "sha256:4be1c0de",
		Steps: []*citizenv1.DataPathStep{
			{Step: stepRegister, Agency: partyMunicipal, Role: "jobcentre_caseworker",
				Purpose: txt("The jobcentre registers your sick leave.", "Jobcentret registrerer dit sygefravær."), LegalBasis: "Sygedagpengeloven § 7",
				Releases: []*citizenv1.DataPathRelease{
					{Authority: partyEmployment, Dataset: "history", Facts: []*citizenv1.Fact{factEmployed}, Fields: []string{"employer.name", "sick_leave_reports.first_day"}},
					{Authority: partyPopulation, Dataset: "person", Fields: []string{"name.given_names", "name.family_name", "address.municipality_code"}},
				}},
			{Step: stepEmployed, Agency: partyMunicipal, Role: "jobcentre_caseworker",
				Purpose: txt("To get sickness benefit you must have worked enough. Only a yes/no is needed, never your salary.", "For at få sygedagpenge skal du have arbejdet nok. Kun et ja/nej er nødvendigt, aldrig din løn."), LegalBasis: "Sygedagpengeloven § 32",
				Releases: []*citizenv1.DataPathRelease{{Authority: partyTaxIncome, Dataset: "income", Facts: []*citizenv1.Fact{factThreshold}}}},
			{Step: stepCapacity, Agency: partyMunicipal, Role: "jobcentre_caseworker",
				Purpose: txt("The jobcentre follows up on how much you can work.", "Jobcentret følger op på, hvor meget du kan arbejde."), LegalBasis: "Sygedagpengeloven § 13 og Sundhedsloven § 43 (samtykke)",
				ConsentRequired: true, ConsentDefaultDays: 90, ConsentMaxDays: 180,
				Releases: []*citizenv1.DataPathRelease{{Authority: partyHealth, Dataset: "patient", Fields: []string{"sick_notes.work_capacity_percent", "sick_notes.expected_return_on"}}}},
			{Step: stepFraud, Agency: partyMunicipal, Role: "control_officer",
				Purpose: txt("The control unit checks suspected benefit fraud.", "Kontrolenheden undersøger mistanke om socialt bedrageri."), LegalBasis: "Retssikkerhedsloven § 12 a",
				CovertReason: txt("telling you early could harm an investigation", "det kan skade en undersøgelse at fortælle dig det tidligt"), CovertMaxDays: 90,
				Releases: []*citizenv1.DataPathRelease{{Authority: partyTaxIncome, Dataset: "income", Fields: []string{"monthly.amount", "monthly.employer"}}}},
		},
	}
}

func movingPath() *citizenv1.GetDataPathResponse {
	return &citizenv1.GetDataPathResponse{
		Journey:     journeyMoving,
		Description: txt("You move to a new address.", ""), // no Danish: the portal falls back to English
		Steps: []*citizenv1.DataPathStep{
			{Step: &citizenv1.StepRef{Id: "register-move", Title: txt("Register the move", "Registrér flytningen"), Number: 1}, Agency: partyMunicipal,
				Purpose: txt("Citizen Service registers your new address.", "Borgerservice registrerer din nye adresse."), LegalBasis: "CPR-loven § 10",
				Releases: []*citizenv1.DataPathRelease{{Authority: partyPopulation, Dataset: "person", Fields: []string{"address"}}}},
		},
	}
}

func testAccesses() []*citizenv1.Access {
	return []*citizenv1.Access{
		{Id: accID(6), Time: ts(testNow.Add(-1 * time.Hour)), Kind: auditv1.AccessKind_ACCESS_KIND_CASEWORKER,
			Agency: partyTax, Caseworker: "4411", Authority: partyTaxIncome, Dataset: "income",
			Facts: []*citizenv1.Fact{factAnswered(factThreshold, false)}, CaseId: caseID(1), Journey: journeySick, Step: stepEmployed,
			Purpose: txt("To get sickness benefit you must have worked enough.", "For at få sygedagpenge skal du have arbejdet nok."), LegalBasis: "Sygedagpengeloven § 7",
			Decision: auditv1.Decision_DECISION_RELEASED},
		{Id: accID(5), Time: ts(testNow.Add(-3 * time.Hour)), Kind: auditv1.AccessKind_ACCESS_KIND_CASEWORKER,
			Agency: partyMunicipal, Caseworker: "jc-207", Authority: partyHealth, Dataset: "patient",
			Fields: []string{"sick_notes.diagnosis"}, CaseId: caseID(1), Journey: journeySick, Step: stepCapacity,
			Purpose: txt("The jobcentre follows up on how much you can work.", ""), LegalBasis: "Sygedagpengeloven § 13",
			Decision: auditv1.Decision_DECISION_REFUSED, Reason: "the field sick_notes.diagnosis is not allowed at this step",
			RefusalReason: auditv1.RefusalReason_REFUSAL_REASON_FIELD_NOT_RELEASED, RefusalSubject: "sick_notes.diagnosis"},
		{Id: accID(4), Time: ts(testNow.Add(-26 * time.Hour)), Kind: auditv1.AccessKind_ACCESS_KIND_CASEWORKER,
			Agency: partyMunicipal, Caseworker: "jc-207", Authority: partyHealth, Dataset: "patient",
			Fields: []string{"sick_notes.work_capacity_percent"}, CaseId: caseID(1), Journey: journeySick, Step: stepCapacity,
			Purpose: txt("The jobcentre follows up on how much you can work.", "Jobcentret følger op på, hvor meget du kan arbejde."), LegalBasis: "Sundhedsloven § 43",
			Decision: auditv1.Decision_DECISION_RELEASED, Violations: []string{"sick_notes.diagnosis"}},
		{Id: accID(3), Time: ts(testNow.Add(-50 * time.Hour)), Kind: auditv1.AccessKind_ACCESS_KIND_CITIZEN_SELF,
			Authority: partyPopulation, Dataset: "person", Fields: []string{"name", "address"},
			Decision: auditv1.Decision_DECISION_RELEASED},
		{Id: accID(2), Time: ts(testNow.Add(-40 * 24 * time.Hour)), Kind: auditv1.AccessKind_ACCESS_KIND_CASEWORKER,
			Agency: partyMunicipal, Caseworker: "ctl-9", Authority: partyTaxIncome, Dataset: "income",
			Fields: []string{"monthly.amount"}, CaseId: caseID(1), Journey: journeySick, Step: stepFraud,
			Purpose: txt("The control unit checks suspected benefit fraud.", "Kontrolenheden undersøger mistanke om socialt bedrageri."), LegalBasis: "Retssikkerhedsloven § 12 a",
			Decision: auditv1.Decision_DECISION_RELEASED, HiddenUntil: ts(testNow.Add(-2 * 24 * time.Hour)),
			HiddenReason: txt("telling you early could harm an investigation", "det kan skade en undersøgelse at fortælle dig det tidligt")},
	}
}

func testCase() *citizenv1.Case {
	return &citizenv1.Case{
		Id: caseID(1), Journey: journeySick, Status: citizenv1.CaseStatus_CASE_STATUS_OPEN,
		CurrentStep: stepCapacity, CurrentAgency: partyMunicipal, OpenedBy: partyMunicipal,
		OpenedAt: ts(testNow.Add(-5 * 24 * time.Hour)), UpdatedAt: ts(testNow.Add(-26 * time.Hour)),
		Steps: []*citizenv1.CaseStep{
			{Step: stepRegister, Agency: partyMunicipal, Status: citizenv1.StepStatus_STEP_STATUS_COMPLETED, StartedAt: ts(testNow.Add(-5 * 24 * time.Hour)), CompletedAt: ts(testNow.Add(-4 * 24 * time.Hour))},
			{Step: stepEmployed, Agency: partyMunicipal, Status: citizenv1.StepStatus_STEP_STATUS_COMPLETED, StartedAt: ts(testNow.Add(-4 * 24 * time.Hour)), CompletedAt: ts(testNow.Add(-2 * 24 * time.Hour))},
			{Step: stepCapacity, Agency: partyMunicipal, Status: citizenv1.StepStatus_STEP_STATUS_CURRENT, StartedAt: ts(testNow.Add(-2 * 24 * time.Hour)), ConsentRequired: true, ConsentGiven: true},
			{Step: stepFraud, Agency: partyMunicipal, Status: citizenv1.StepStatus_STEP_STATUS_PENDING},
		},
	}
}

type call struct {
	method string
	token  string
	req    proto.Message
}

type fakeCitizen struct {
	citizenv1.UnimplementedCitizenServiceServer

	mu       sync.Mutex
	calls    []call
	fail     map[string]error
	watch    chan *citizenv1.Access
	watching chan struct{}
	// given is whether the consent of the assess-work-capacity step is given now (GrantConsent sets
	// it, RevokeConsent clears it); before, the step has a consent withdrawn long ago.
	given bool
}

func newFake() *fakeCitizen {
	return &fakeCitizen{fail: map[string]error{}, watch: make(chan *citizenv1.Access, 8), watching: make(chan struct{}, 8)}
}

// enter records the call, checks the token and returns the injected failure of the method, if any.
func (f *fakeCitizen) enter(ctx context.Context, method string, req proto.Message) error {
	md, _ := metadata.FromIncomingContext(ctx)
	var token string
	if a := md.Get("authorization"); len(a) == 1 {
		token, _ = strings.CutPrefix(a[0], "Bearer ")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call{method, token, proto.Clone(req)})
	if token != testToken {
		return status.Error(codes.Unauthenticated, "the sign-in has expired")
	}
	return f.fail[method]
}

func (f *fakeCitizen) setFail(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[method] = err
}

// last returns the last request of a method, or nil.
func (f *fakeCitizen) last(method string) *call {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.calls) - 1; i >= 0; i-- {
		if f.calls[i].method == method {
			c := f.calls[i]
			return &c
		}
	}
	return nil
}

func (f *fakeCitizen) count(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c.method == method {
			n++
		}
	}
	return n
}

func (f *fakeCitizen) ListAccesses(ctx context.Context, r *citizenv1.ListAccessesRequest) (*citizenv1.ListAccessesResponse, error) {
	if err := f.enter(ctx, "ListAccesses", r); err != nil {
		return nil, err
	}
	all := testAccesses()
	if r.GetPageToken() == "refusals" {
		return &citizenv1.ListAccessesResponse{Accesses: refusalAccesses()}, nil
	}
	if r.GetPageToken() == "p2" {
		return &citizenv1.ListAccessesResponse{Accesses: all[3:]}, nil
	}
	if r.GetAuthority() != "" || r.GetJourney() != "" || r.GetExcludeSelf() {
		var out []*citizenv1.Access
		for _, a := range all {
			if r.GetExcludeSelf() && a.GetKind() == auditv1.AccessKind_ACCESS_KIND_CITIZEN_SELF {
				continue
			}
			if (r.GetAuthority() == "" || a.GetAuthority().GetId() == r.GetAuthority()) && (r.GetJourney() == "" || a.GetJourney().GetId() == r.GetJourney()) {
				out = append(out, a)
			}
		}
		return &citizenv1.ListAccessesResponse{Accesses: out}, nil
	}
	return &citizenv1.ListAccessesResponse{Accesses: all[:3], NextPageToken: "p2"}, nil
}

func (f *fakeCitizen) WatchAccesses(r *citizenv1.WatchAccessesRequest, s grpc.ServerStreamingServer[citizenv1.WatchAccessesResponse]) error {
	if err := f.enter(s.Context(), "WatchAccesses", r); err != nil {
		return err
	}
	// Like the real API: headers once subscribed, so the portal can tell the page it is live.
	if err := s.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	f.watching <- struct{}{}
	for {
		select {
		case <-s.Context().Done():
			return nil
		case a := <-f.watch:
			if err := s.Send(&citizenv1.WatchAccessesResponse{Access: a}); err != nil {
				return err
			}
		}
	}
}

func (f *fakeCitizen) ListCases(ctx context.Context, r *citizenv1.ListCasesRequest) (*citizenv1.ListCasesResponse, error) {
	if err := f.enter(ctx, "ListCases", r); err != nil {
		return nil, err
	}
	closed := &citizenv1.Case{Id: caseID(2), Journey: journeyMoving, Status: citizenv1.CaseStatus_CASE_STATUS_CLOSED,
		OpenedAt: ts(testNow.Add(-300 * 24 * time.Hour)), Steps: []*citizenv1.CaseStep{
			{Step: &citizenv1.StepRef{Id: "register-move", Title: txt("Register the move", "Registrér flytningen"), Number: 1}, Agency: partyMunicipal, Status: citizenv1.StepStatus_STEP_STATUS_COMPLETED}}}
	return &citizenv1.ListCasesResponse{Cases: []*citizenv1.Case{testCase(), closed}, NextPageToken: "c2"}, nil
}

func (f *fakeCitizen) GetCase(ctx context.Context, r *citizenv1.GetCaseRequest) (*citizenv1.GetCaseResponse, error) {
	if err := f.enter(ctx, "GetCase", r); err != nil {
		return nil, err
	}
	if r.GetCaseId() != caseID(1) {
		return nil, status.Error(codes.NotFound, "no such case")
	}
	return &citizenv1.GetCaseResponse{Case: testCase()}, nil
}

func (f *fakeCitizen) ListJourneys(ctx context.Context, r *citizenv1.ListJourneysRequest) (*citizenv1.ListJourneysResponse, error) {
	if err := f.enter(ctx, "ListJourneys", r); err != nil {
		return nil, err
	}
	return &citizenv1.ListJourneysResponse{Journeys: []*citizenv1.JourneySummary{
		{Journey: journeySick, Description: sickPath().GetDescription(), Steps: 4},
		{Journey: journeyMoving, Description: movingPath().GetDescription(), Steps: 1},
	}}, nil
}

func (f *fakeCitizen) GetDataPath(ctx context.Context, r *citizenv1.GetDataPathRequest) (*citizenv1.GetDataPathResponse, error) {
	if err := f.enter(ctx, "GetDataPath", r); err != nil {
		return nil, err
	}
	switch r.GetJourney() {
	case "sickness-benefit":
		return sickPath(), nil
	case "moving-house":
		return movingPath(), nil
	}
	return nil, status.Error(codes.NotFound, "no such journey")
}

func (f *fakeCitizen) ListConsents(ctx context.Context, r *citizenv1.ListConsentsRequest) (*citizenv1.ListConsentsResponse, error) {
	if err := f.enter(ctx, "ListConsents", r); err != nil {
		return nil, err
	}
	return &citizenv1.ListConsentsResponse{Consents: []*citizenv1.Consent{
		{Journey: journeySick, Step: stepCapacity, Agency: partyMunicipal, GrantedAt: ts(testNow.Add(-2 * 24 * time.Hour)), ExpiresAt: ts(testNow.Add(88 * 24 * time.Hour)), Valid: true},
		{Journey: journeySick, Step: stepCapacity, Agency: partyMunicipal, GrantedAt: ts(testNow.Add(-200 * 24 * time.Hour)), ExpiresAt: ts(testNow.Add(-110 * 24 * time.Hour)), RevokedAt: ts(testNow.Add(-150 * 24 * time.Hour))},
	}}, nil
}

func (f *fakeCitizen) PreviewConsent(ctx context.Context, r *citizenv1.PreviewConsentRequest) (*citizenv1.PreviewConsentResponse, error) {
	if err := f.enter(ctx, "PreviewConsent", r); err != nil {
		return nil, err
	}
	if r.GetJourney() != "sickness-benefit" || r.GetStep() != "assess-work-capacity" {
		return nil, status.Error(codes.NotFound, "no such step")
	}
	if r.GetDays() > 180 {
		return nil, status.Error(codes.InvalidArgument, "days: at most 180")
	}
	days := r.GetDays()
	if days == 0 {
		days = 90
	}
	return &citizenv1.PreviewConsentResponse{
		Step:      sickPath().GetSteps()[2],
		ExpiresAt: ts(testNow.Add(time.Duration(days) * 24 * time.Hour)),
		Current:   f.current(),
	}, nil
}

func (f *fakeCitizen) GrantConsent(ctx context.Context, r *citizenv1.GrantConsentRequest) (*citizenv1.GrantConsentResponse, error) {
	if err := f.enter(ctx, "GrantConsent", r); err != nil {
		return nil, err
	}
	if r.GetDays() > 180 {
		return nil, status.Error(codes.InvalidArgument, "days: at most 180")
	}
	f.mu.Lock()
	f.given = true
	f.mu.Unlock()
	return &citizenv1.GrantConsentResponse{Consent: f.current()}, nil
}

func (f *fakeCitizen) RevokeConsent(ctx context.Context, r *citizenv1.RevokeConsentRequest) (*citizenv1.RevokeConsentResponse, error) {
	if err := f.enter(ctx, "RevokeConsent", r); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.given = false
	f.mu.Unlock()
	return &citizenv1.RevokeConsentResponse{Consent: f.current()}, nil
}

func (f *fakeCitizen) GetMyData(ctx context.Context, r *citizenv1.GetMyDataRequest) (*citizenv1.GetMyDataResponse, error) {
	if err := f.enter(ctx, "GetMyData", r); err != nil {
		return nil, err
	}
	if r.GetAuthority() == "employment" {
		return &citizenv1.GetMyDataResponse{Authority: partyEmployment, Dataset: r.GetDataset(), AccessId: accID(8), Found: false}, nil
	}
	rec, err := structpb.NewStruct(map[string]any{
		// As the broker sends it: the protobuf JSON mapping, which leaves out a false and writes a
		// 64-bit number as a string.
		"name":    map[string]any{"given_names": "Karen Marie", "family_name": "Jensen"},
		"address": map[string]any{"street": "Nørrebrogade 12, 2. th.", "postcode": "2200", "municipality_code": "0101", "moved_in_on": "2021-08-01T00:00:00Z"},
		"household": []any{
			map[string]any{"given_names": "Ole", "relation": "RELATION_SPOUSE"},
			map[string]any{"given_names": "Ida", "relation": "RELATION_CHILD"},
		},
		"assessed_income_dkk": "412500",
	})
	if err != nil {
		return nil, err
	}
	return &citizenv1.GetMyDataResponse{Authority: partyPopulation, Dataset: r.GetDataset(), Record: rec, AccessId: accID(7), Found: true}, nil
}

// refusalAccesses are one refused access of every refusal reason, about a labelled field (or, for a
// fact, a fact), as an agency would meet them.
func refusalAccesses() []*citizenv1.Access {
	var out []*citizenv1.Access
	for n := range int32(len(auditv1.RefusalReason_name)) {
		why := auditv1.RefusalReason(n)
		a := &citizenv1.Access{Id: accID(100 + int(n)), Time: ts(testNow.Add(-time.Duration(n) * time.Minute)),
			Agency: partyMunicipal, Caseworker: "jc-207", Authority: partyHealth, Dataset: "patient",
			Fields: []string{"sick_notes.diagnosis"}, CaseId: caseID(1), Journey: journeySick, Step: stepCapacity,
			Purpose: txt("The jobcentre follows up on how much you can work.", "Jobcentret følger op på, hvor meget du kan arbejde."), LegalBasis: "Sygedagpengeloven § 13",
			Decision: auditv1.Decision_DECISION_REFUSED, RefusalReason: why, RefusalSubject: "sick_notes.diagnosis",
			Reason: `field "sick_notes.diagnosis" of health.patient is not released at step "assess-work-capacity"`}
		if why == auditv1.RefusalReason_REFUSAL_REASON_FACT_NOT_RELEASED {
			a.Authority, a.Dataset, a.Fields, a.Facts, a.RefusalSubject = partyTaxIncome, "income", nil, []*citizenv1.Fact{factThreshold}, factThreshold.GetName()
		}
		out = append(out, a)
	}
	return out
}

// testLabels are the labels the test authorities declare (the real ones come from their protos).
func testLabels() *citizenv1.ListDatasetsResponse {
	fl := func(path, en, da string, kind citizenv1.FieldKind, values ...*citizenv1.ValueLabel) *citizenv1.FieldLabel {
		return &citizenv1.FieldLabel{Path: path, Label: txt(en, da), Kind: kind, Values: values}
	}
	const (
		text   = citizenv1.FieldKind_FIELD_KIND_TEXT
		number = citizenv1.FieldKind_FIELD_KIND_NUMBER
		when   = citizenv1.FieldKind_FIELD_KIND_TIME
		record = citizenv1.FieldKind_FIELD_KIND_RECORD
		yesNo  = citizenv1.FieldKind_FIELD_KIND_BOOL
		enum   = citizenv1.FieldKind_FIELD_KIND_ENUM
	)
	relation := fl("household.relation", "Relation to you", "Relation til dig", enum,
		&citizenv1.ValueLabel{Name: "RELATION_UNSPECIFIED", Label: txt("Not registered", "Ikke registreret")},
		&citizenv1.ValueLabel{Name: "RELATION_SPOUSE", Label: txt("Spouse", "Ægtefælle")},
		&citizenv1.ValueLabel{Name: "RELATION_CHILD", Label: txt("Child", "Barn")})
	household := fl("household", "People living at your address", "Personer på din adresse", record)
	household.List = true
	months := fl("monthly", "Income month by month", "Indkomst måned for måned", record)
	months.List = true
	notes := fl("sick_notes", "Sick notes", "Lægeerklæringer", record)
	notes.List = true
	return &citizenv1.ListDatasetsResponse{Datasets: []*citizenv1.DatasetLabels{
		{Authority: partyPopulation, Dataset: "person", Label: txt("Personal details", "Personoplysninger"), Fields: []*citizenv1.FieldLabel{
			fl("name", "Name", "Navn", record),
			fl("name.given_names", "First names", "Fornavne", text),
			fl("name.family_name", "Surname", "Efternavn", text),
			fl("address", "Address", "Adresse", record),
			fl("address.street", "Street", "Vej", text),
			fl("address.postcode", "Postcode", "Postnummer", text),
			fl("address.municipality_code", "Municipality number", "Kommunenummer", text),
			fl("address.moved_in_on", "Moved in on", "Indflyttet den", when),
			household,
			fl("household.given_names", "First names", "Fornavne", text),
			relation,
			fl("protected_address", "Protected address", "Beskyttet adresse", yesNo),
			fl("assessed_income_dkk", "Assessed yearly income (DKK)", "Årsopgjort indkomst (kr.)", number),
		}},
		{Authority: partyHealth, Dataset: "patient", Label: txt("Doctor and sick notes", "Læge og lægeerklæringer"), Fields: []*citizenv1.FieldLabel{
			notes,
			fl("sick_notes.diagnosis", "Diagnosis", "Diagnose", text),
			fl("sick_notes.work_capacity_percent", "How much you can work (percent)", "Hvor meget du kan arbejde (procent)", number),
			fl("sick_notes.expected_return_on", "Expected back at work", "Forventet tilbage på arbejde", when),
		}},
		{Authority: partyTaxIncome, Dataset: "income", Label: txt("Income", "Indkomst"), Fields: []*citizenv1.FieldLabel{
			months,
			fl("monthly.amount", "Income before tax (DKK)", "Indkomst før skat (kr.)", number),
			fl("monthly.employer", "Employer", "Arbejdsgiver", text),
		}},
		{Authority: partyEmployment, Dataset: "history", Label: txt("Jobs and sick leave", "Job og sygefravær"), Fields: []*citizenv1.FieldLabel{
			fl("employer", "Employer", "Arbejdsgiver", record),
			fl("employer.name", "Name", "Navn", text),
			fl("sick_leave_reports", "Sick leave reported by your employer", "Sygemeldinger fra din arbejdsgiver", record),
			fl("sick_leave_reports.first_day", "First day of sickness", "Første sygedag", when),
		}},
	}}
}

func (f *fakeCitizen) ListDatasets(ctx context.Context, r *citizenv1.ListDatasetsRequest) (*citizenv1.ListDatasetsResponse, error) {
	if err := f.enter(ctx, "ListDatasets", r); err != nil {
		return nil, err
	}
	return testLabels(), nil
}

func (f *fakeCitizen) QuestionAccess(ctx context.Context, r *citizenv1.QuestionAccessRequest) (*citizenv1.QuestionAccessResponse, error) {
	if err := f.enter(ctx, "QuestionAccess", r); err != nil {
		return nil, err
	}
	return &citizenv1.QuestionAccessResponse{Question: &citizenv1.Question{Id: "qst_1", AccessId: r.GetAccessId(), Message: r.GetMessage(), Status: citizenv1.QuestionStatus_QUESTION_STATUS_OPEN}}, nil
}

func (f *fakeCitizen) ListQuestions(ctx context.Context, r *citizenv1.ListQuestionsRequest) (*citizenv1.ListQuestionsResponse, error) {
	if err := f.enter(ctx, "ListQuestions", r); err != nil {
		return nil, err
	}
	return &citizenv1.ListQuestionsResponse{Questions: []*citizenv1.Question{
		{Id: "qst_2", AccessId: accID(5), Agency: partyMunicipal, Message: "Why did the jobcentre ask for my diagnosis?", AskedAt: ts(testNow.Add(-2 * time.Hour)), Status: citizenv1.QuestionStatus_QUESTION_STATUS_OPEN},
		{Id: "qst_1", AccessId: accID(6), Agency: partyTax, Message: "Why does the tax agency need my income?", AskedAt: ts(testNow.Add(-30 * time.Hour)),
			Status: citizenv1.QuestionStatus_QUESTION_STATUS_ANSWERED, Answer: "We only received a yes/no about your income, to check the employment requirement.", AnsweredBy: "tax-cw-1", AnsweredAt: ts(testNow.Add(-20 * time.Hour))},
	}}, nil
}

// testSessions is the sign-in of the tests: the cookie aperture_session holds the token itself.
type testSessions struct{}

func (testSessions) Session(r *http.Request) (string, string, bool) {
	c, err := r.Cookie("aperture_session")
	if err != nil || c.Value == "" {
		return "", "", false
	}
	return c.Value, "Karen Jensen", true
}

// stack is a portal on an httptest server in front of the fake on a real gRPC listener.
type stack struct {
	fake   *fakeCitizen
	srv    *httptest.Server
	portal *Portal
}

func newStack(t testing.TB) *stack {
	t.Helper()
	fake := newFake()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	citizenv1.RegisterCitizenServiceServer(gs, fake)
	go gs.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{
		Citizen:    citizenv1.NewCitizenServiceClient(conn),
		Sessions:   testSessions{},
		DevBanner:  true,
		Logger:     slog.New(slog.DiscardHandler),
		Now:        func() time.Time { return testNow },
		CatalogTTL: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	p.Routes(mux)
	// A stand-in for the login package's error handler (citizenauth.WithErrorHandler).
	mux.HandleFunc("GET /signin-problem/{problem}", func(w http.ResponseWriter, r *http.Request) {
		p.SigninError(w, r, http.StatusBadRequest, r.PathValue("problem"))
	})
	// A stand-in for the login package: GET /login signs in and goes back.
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "aperture_session", Value: testToken, Path: "/", HttpOnly: true})
		back := r.URL.Query().Get("return")
		if u, err := url.Parse(back); err != nil || !strings.HasPrefix(back, "/") || u.Host != "" {
			back = "/"
		}
		http.Redirect(w, r, back, http.StatusSeeOther)
	})
	mux.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "aperture_session", Value: "", Path: "/", MaxAge: -1})
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		conn.Close()
		gs.Stop()
	})
	return &stack{fake: fake, srv: srv, portal: p}
}

// current is the consent of the assess-work-capacity step as it stands.
func (f *fakeCitizen) current() *citizenv1.Consent {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.given {
		return &citizenv1.Consent{Journey: journeySick, Step: stepCapacity, Agency: partyMunicipal, GrantedAt: ts(testNow.Add(-2 * 24 * time.Hour)), ExpiresAt: ts(testNow.Add(88 * 24 * time.Hour)), Valid: true}
	}
	return &citizenv1.Consent{Journey: journeySick, Step: stepCapacity, Agency: partyMunicipal, GrantedAt: ts(testNow.Add(-200 * 24 * time.Hour)), ExpiresAt: ts(testNow.Add(-110 * 24 * time.Hour)), RevokedAt: ts(testNow.Add(-150 * 24 * time.Hour))}
}

// factAnswered is f with the answer the agency got, as the citizen API sends it where the policy shows it.
func factAnswered(f *citizenv1.Fact, answer bool) *citizenv1.Fact {
	c := proto.CloneOf(f)
	c.Answer = &answer
	return c
}
