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

// TestNoDeadMetrics: every metric of coreapi's code is updated by some code
// path, and every series exported at zero from the start is one an update
// can make (metricslint.Dead).
func TestNoDeadMetrics(t *testing.T) {
	metricslint.CheckDead(t, "../..", "coreapi_", 15)
}

// TestAlertsQueryExportedMetrics: every coreapi_ metric the suggested
// alerts of docs/operations.md query is one coreapi exports, under the
// name its kind exports (a histogram's _bucket, _count, _sum).
func TestAlertsQueryExportedMetrics(t *testing.T) {
	metricslint.CheckAlerts(t, "../../../docs/operations.md", "coreapi_", "../..", 10)
}
