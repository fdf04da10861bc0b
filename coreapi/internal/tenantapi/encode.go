package tenantapi

import (
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/jsonenc"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
)

// memberPage is the member list's response, written by AppendJSON.
type memberPage httpapi.ListResponse[users.Member]

// AppendJSON appends p as encoding/json marshals httpapi.ListResponse[users.Member]
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
			b = p.Data[i].AppendJSON(b)
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
