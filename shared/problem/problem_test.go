package problem

import (
	"encoding/json"
	"testing"
)

func TestProblemJSON(t *testing.T) {
	p := New(404, CodeNotFound, "no such user").With("rid-1", "/api/v1/users/x")
	var got map[string]any
	if err := json.Unmarshal(p.JSON(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"type": "about:blank", "title": "Not Found", "status": float64(404),
		"code": "not_found", "detail": "no such user", "request_id": "rid-1", "instance": "/api/v1/users/x"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if p.Error() != "not_found: no such user" {
		t.Errorf("Error() = %q", p.Error())
	}
}

// TestTitles: a problem's title is its status's reason phrase (RFC 9457
// section 4.2.1), in RFC 9110's wording where it differs from older names,
// for every status the services answer; "Error" only for a status without
// one.
func TestTitles(t *testing.T) {
	for status, want := range map[int]string{
		400: "Bad Request", 404: "Not Found", 413: "Content Too Large", 422: "Unprocessable Content",
		410: "Gone", 501: "Not Implemented", 505: "HTTP Version Not Supported", 599: "Error",
	} {
		if got := New(status, CodeBadRequest, "").Title; got != want {
			t.Errorf("title of %d = %q, want %q", status, got, want)
		}
	}
}
