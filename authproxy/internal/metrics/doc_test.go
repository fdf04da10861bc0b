package metrics

import (
	"testing"

	"github.com/tollgate-auth/tollgate/shared/metricslint"
)

// TestDocumentedMetricsExist: every authproxy_ metric docs/operations.md
// lists is defined in the proxy's code (the live test checks the other
// way: every exported metric is documented).
func TestDocumentedMetricsExist(t *testing.T) {
	metricslint.CheckDocumented(t, "../../../docs/operations.md", "authproxy_", "../..", 15)
}
