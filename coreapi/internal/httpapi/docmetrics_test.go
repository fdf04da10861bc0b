package httpapi_test

import (
	"testing"

	"github.com/tollgate-auth/tollgate/shared/metricslint"
)

// TestDocumentedMetricsExist: every coreapi_ metric docs/operations.md
// lists is defined in coreapi's code (the live test checks the other
// way: every exported metric is documented).
func TestDocumentedMetricsExist(t *testing.T) {
	metricslint.CheckDocumented(t, "../../../docs/operations.md", "coreapi_", "../..", 15)
}
