package logtest

import "testing"

// TestCountLines: lines of every name asked for are counted, the counts of
// the unlogged lines added up, and other lines and non-JSON text ignored.
func TestCountLines(t *testing.T) {
	logs := `{"msg":"a"}
{"msg":"b","count":7}
not json
{"msg":"left out","count":3}
{"msg":"c"}
{"msg":"left out","count":4}
{"msg":"a"}
`
	if lines, counted := CountLines(logs, "left out", "a", "b"); lines != 3 || counted != 7 {
		t.Errorf("CountLines = %d lines, %d counted; want 3, 7", lines, counted)
	}
	if lines, counted := CountLines(logs, "none", "c"); lines != 1 || counted != 0 {
		t.Errorf("CountLines = %d lines, %d counted; want 1, 0", lines, counted)
	}
}
