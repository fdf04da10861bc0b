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
