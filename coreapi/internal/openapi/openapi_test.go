package openapi

import (
	"encoding/json"
	"testing"
)

func TestDocumentLoadsAndValidates(t *testing.T) {
	if _, err := NewValidator(); err != nil {
		t.Fatal(err)
	}
	var d struct {
		OpenAPI string `json:"openapi"`
	}
	if err := json.Unmarshal(Document(), &d); err != nil || d.OpenAPI != "3.1.0" {
		t.Fatalf("openapi = %q, %v; want 3.1.0", d.OpenAPI, err)
	}
}
