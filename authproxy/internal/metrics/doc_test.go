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

// TestNoDeadMetrics: every metric of the proxy's code is updated by some
// code path, and every series exported at zero from the start is one an
// update can make (metricslint.Dead).
func TestNoDeadMetrics(t *testing.T) {
	metricslint.CheckDead(t, "../..", "authproxy_", 25)
}

// TestAlertsQueryExportedMetrics: every authproxy_ metric the suggested
// alerts of docs/operations.md query is one the proxy exports, under the
// name its kind exports (a histogram's _bucket, _count, _sum).
func TestAlertsQueryExportedMetrics(t *testing.T) {
	metricslint.CheckAlerts(t, "../../../docs/operations.md", "authproxy_", "../..", 10)
}
