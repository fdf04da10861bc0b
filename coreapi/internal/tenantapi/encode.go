package tenantapi

import (
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/jsonenc"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
)

// AppendJSON appends m as encoding/json would marshal it (same fields,
// order and escaping; a test holds them equal), without reflection: the
// member list writes up to 200 of them per request.
func (m *member) AppendJSON(b []byte) []byte {
	b = jsonenc.String(append(b, `{"id":`...), m.ID)
	b = jsonenc.String(append(b, `,"email":`...), m.Email)
	b = jsonenc.String(append(b, `,"display_name":`...), m.DisplayName)
	b = jsonenc.String(append(b, `,"membership_status":`...), m.Status)
	b = jsonenc.String(append(b, `,"user_status":`...), m.UserStatus)
	b = jsonenc.Strings(append(b, `,"roles":`...), m.Roles)
	b = jsonenc.Time(append(b, `,"created_at":`...), m.CreatedAt)
	b = jsonenc.Time(append(b, `,"updated_at":`...), m.UpdatedAt)
	return append(b, '}')
}

// AppendJSON appends me as encoding/json would marshal it (a test holds
// them equal).
func (me *me) AppendJSON(b []byte) []byte {
	b = jsonenc.String(append(b, `{"id":`...), me.ID)
	b = jsonenc.String(append(b, `,"email":`...), me.Email)
	b = jsonenc.Bool(append(b, `,"email_verified":`...), me.EmailVerified)
	b = jsonenc.String(append(b, `,"display_name":`...), me.DisplayName)
	b = jsonenc.String(append(b, `,"status":`...), me.Status)
	b = jsonenc.String(append(b, `,"tenant_id":`...), me.TenantID)
	b = jsonenc.String(append(b, `,"membership_status":`...), me.MembershipStatus)
	b = jsonenc.Strings(append(b, `,"roles":`...), me.Roles)
	b = jsonenc.Strings(append(b, `,"permissions":`...), me.Permissions)
	b = jsonenc.Time(append(b, `,"created_at":`...), me.CreatedAt)
	b = jsonenc.Time(append(b, `,"updated_at":`...), me.UpdatedAt)
	b = jsonenc.Bool(append(b, `,"mfa_enabled":`...), me.MFAEnabled)
	return append(b, '}')
}

// memberPage is the member list's response, written by AppendJSON. It
// holds the store's rows and converts each to a member as it writes it
// (no second slice).
type memberPage httpapi.ListResponse[users.Member]

// AppendJSON appends p as encoding/json marshals httpapi.ListResponse[member]
// (a test holds them equal).
func (p memberPage) AppendJSON(b []byte) []byte {
	b = append(b, `{"data":`...)
	if p.Data == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range p.Data {
			if i > 0 {
				b = append(b, ',')
			}
			m := member(p.Data[i])
			b = m.AppendJSON(b)
		}
		b = append(b, ']')
	}
	b = append(b, `,"next_cursor":`...)
	if p.NextCursor == nil {
		b = append(b, "null"...)
	} else {
		b = jsonenc.String(b, *p.NextCursor)
	}
	if p.Total != nil {
		b = jsonenc.Int(append(b, `,"total":`...), *p.Total)
	}
	return append(b, '}')
}
