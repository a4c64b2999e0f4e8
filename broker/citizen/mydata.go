package citizen

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/authorities"
	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/refusal"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"github.com/aperture-gov/aperture/services/kit/fieldmask"
)

// Self-access constants: what the access record and the authority's access context say when a
// citizen looks at their own data.
const (
	// SelfLegalBasis is the law that gives a citizen the right to see their data.
	SelfLegalBasis = "GDPR Art. 15"
	// SelfAgency names the caller in the authority's access context (the record's agency stays empty).
	SelfAgency = "citizen"
	// SelfCase stands in for a case in the authority's access context, which requires one.
	SelfCase = "self-access"
)

// GetMyData implements CitizenService: the whole record one authority holds about the citizen, fetched
// through the broker and logged as the citizen's own access — durably, before anything is answered.
func (s *Service) GetMyData(ctx context.Context, req *citizenv1.GetMyDataRequest) (*citizenv1.GetMyDataResponse, error) {
	c, err := citizenOf(ctx)
	if err != nil {
		return nil, err
	}
	b := s.cfg.Policies()
	a, ok := b.Registry.Authority(req.GetAuthority())
	if !ok || !slices.Contains(a.Datasets, req.GetDataset()) {
		return nil, refusal.New(refusal.NotFound, "there is no dataset %q of authority %q", req.GetDataset(), req.GetAuthority())
	}
	md, err := s.cfg.Authorities.Dataset(a.ID, req.GetDataset())
	if err != nil {
		return nil, refusal.Wrap(refusal.Unavailable, err, "the schema of %s.%s is unavailable", a.ID, req.GetDataset())
	}
	now := s.cfg.Now()
	rec := &auditv1.AccessRecord{
		Id:               ids.New("acc", now),
		Time:             timestamppb.New(now),
		CitizenPseudonym: c.Pseudonym.Value,
		PseudonymKeyId:   c.Pseudonym.KeyID,
		Kind:             auditv1.AccessKind_ACCESS_KIND_CITIZEN_SELF,
		Authority:        a.ID,
		Dataset:          req.GetDataset(),
		Purpose:          selfPurpose(a.Name).GetEn(),
		LegalBasis:       SelfLegalBasis,
		PolicyVersion:    b.Version,
	}
	resp := &citizenv1.GetMyDataResponse{Authority: names{b}.authority(a.ID), Dataset: req.GetDataset(), AccessId: rec.Id}

	record, fields, ref := s.fetchOwn(ctx, c, md, rec)
	switch {
	case ref == nil:
		rec.Decision, rec.Fields = auditv1.Decision_DECISION_RELEASED, fields
	case ref.Kind == refusal.NotFound:
		// Nothing held: that answer is logged as well, and is not an error for the citizen.
		rec.Decision, rec.Reason, rec.Code = auditv1.Decision_DECISION_REFUSED, ref.Reason, ref.Kind.String()
	default:
		rec.Decision, rec.Reason, rec.Code = auditv1.Decision_DECISION_REFUSED, ref.Reason, ref.Kind.String()
		if err := s.cfg.Log.Append(ctx, rec); err != nil {
			return nil, refusal.Wrap(refusal.Unavailable, err, "the access log is unavailable; nothing was shown")
		}
		return nil, ref
	}
	if err := s.cfg.Log.Append(ctx, rec); err != nil {
		return nil, refusal.Wrap(refusal.Unavailable, err, "the access log is unavailable; nothing was shown")
	}
	if record != nil {
		resp.Record, resp.Found = record, true
	}
	return resp, nil
}

// fetchOwn fetches every leaf of the dataset for the citizen and returns it as a Struct (proto field
// names) with the leaf paths it holds, or a refusal (NotFound when the authority holds nothing).
func (s *Service) fetchOwn(ctx context.Context, c Citizen, md protoreflect.MessageDescriptor, rec *auditv1.AccessRecord) (*structpb.Struct, []string, *refusal.Error) {
	fr := &authorityv1.FetchRequest{
		CitizenId: c.id,
		Dataset:   rec.Dataset,
		FieldMask: &fieldmaskpb.FieldMask{Paths: fieldmask.Leaves(md)},
		Context: &authorityv1.AccessContext{
			AccessId: rec.Id, CaseId: SelfCase, Purpose: rec.Purpose, LegalBasis: rec.LegalBasis, Agency: SelfAgency,
		},
	}
	fctx, cancel := context.WithTimeout(ctx, s.cfg.FetchTimeout)
	resp, err := s.cfg.Authorities.Fetch(fctx, rec.Authority, fr)
	cancel()
	switch {
	case errors.Is(err, authorities.ErrNotFound):
		return nil, nil, refusal.New(refusal.NotFound, "%s holds no %s record about you", rec.Authority, rec.Dataset)
	case err != nil:
		return nil, nil, refusal.Wrap(refusal.Unavailable, err, "authority %q is unavailable; please try again", rec.Authority)
	}
	st, fields, err := toStruct(md, resp.GetRecord().GetTypeUrl(), resp.GetRecord().GetValue())
	if err != nil {
		return nil, nil, refusal.Wrap(refusal.Unavailable, err, "authority %q answered with a malformed record", rec.Authority)
	}
	return st, fields, nil
}

// toStruct decodes a record of type md and converts it to a Struct through its JSON mapping.
func toStruct(md protoreflect.MessageDescriptor, typeURL string, value []byte) (*structpb.Struct, []string, error) {
	if typeURL == "" {
		return nil, nil, errors.New("no record in answer")
	}
	if got := protoreflect.FullName(typeURL[lastSlash(typeURL)+1:]); got != md.FullName() {
		return nil, nil, fmt.Errorf("record type %s, want %s", got, md.FullName())
	}
	msg := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(value, msg); err != nil {
		return nil, nil, fmt.Errorf("decode %s: %w", md.FullName(), err)
	}
	msg.SetUnknown(nil)
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(msg)
	if err != nil {
		return nil, nil, fmt.Errorf("encode %s as JSON: %w", md.FullName(), err)
	}
	st := &structpb.Struct{}
	if err := protojson.Unmarshal(js, st); err != nil {
		return nil, nil, fmt.Errorf("convert %s to a Struct: %w", md.FullName(), err)
	}
	return st, fieldmask.Extra(msg, nil), nil
}

func lastSlash(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '/' {
			return i
		}
	}
	return -1
}
