package httpapi_test

import (
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

type world = apitest.World

func newWorld(t *testing.T) *world {
	t.Helper()
	return apitest.SeedWorld(t, start(t, apitest.Options{}))
}

// metricValue returns the value of the counter or gauge name whose labels
// include the rendered pair label (e.g. `reason="replay"`); 0 when absent.
func metricValue(t *testing.T, e *apitest.Env, name, label string) float64 {
	t.Helper()
	mfs, err := e.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				match = match || lp.GetName()+`="`+lp.GetValue()+`"` == label
			}
			if !match {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}
