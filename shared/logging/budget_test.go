package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBudget(t *testing.T) {
	b := &Budget{PerSecond: 3}
	at := time.Unix(1000, 0)
	for i := range 3 {
		if ok, dropped := b.Take(at); !ok || dropped != 0 {
			t.Fatalf("line %d: %v, %d dropped", i, ok, dropped)
		}
	}
	for range 5 {
		if ok, _ := b.Take(at.Add(500 * time.Millisecond)); ok {
			t.Fatal("a line over the budget let through")
		}
	}
	if ok, dropped := b.Take(at.Add(time.Second)); !ok || dropped != 5 {
		t.Fatalf("next second: %v, %d dropped, want true, 5", ok, dropped)
	}
	if ok, dropped := b.Take(at.Add(3 * time.Second)); !ok || dropped != 0 {
		t.Fatalf("later: %v, %d dropped, want true, 0 (reported once)", ok, dropped)
	}
}

// reports collects what a Budget's Report is given.
func reports(b *Budget) <-chan int64 {
	ch := make(chan int64, 16)
	b.Report = func(dropped int64, _ slog.Level) { ch <- dropped }
	return ch
}

// wantReport waits for the next report and checks its count.
func wantReport(t *testing.T, ch <-chan int64, want int64) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("reported %d dropped, want %d", got, want)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("no report of %d dropped within 3 s", want)
	}
}

// TestBudgetReportsAfterBurst: a burst followed by silence was counted,
// and the count waited for a later line that might never come. Now the
// timer reports it, once: a later line gets nothing.
func TestBudgetReportsAfterBurst(t *testing.T) {
	b := &Budget{PerSecond: 3}
	ch := reports(b)
	at := time.Unix(1000, 0)
	for range 10 {
		b.Take(at)
	}
	wantReport(t, ch, 7)
	if ok, dropped := b.Take(at.Add(time.Second)); !ok || dropped != 0 {
		t.Fatalf("after the report: %v, %d dropped, want true, 0 (reported once)", ok, dropped)
	}
	select {
	case got := <-ch:
		t.Fatalf("reported again: %d", got)
	default:
	}
}

// TestBudgetTakeBeforeTimer: a count handed to a later line is not
// reported by the timer too; refusals after it are, alone.
func TestBudgetTakeBeforeTimer(t *testing.T) {
	b := &Budget{PerSecond: 3}
	ch := reports(b)
	at := time.Unix(1000, 0)
	for range 10 {
		b.Take(at)
	}
	if ok, dropped := b.Take(at.Add(time.Second)); !ok || dropped != 7 {
		t.Fatalf("next second: %v, %d dropped, want true, 7", ok, dropped)
	}
	for range 4 { // 2 more let through, 2 refused
		b.Take(at.Add(time.Second))
	}
	// The timer armed in the first second finds the count taken and the
	// next second's 2 pending: those, not the 7, are reported.
	wantReport(t, ch, 2)
	if ok, dropped := b.Take(at.Add(2 * time.Second)); !ok || dropped != 0 {
		t.Fatalf("after the report: %v, %d dropped, want true, 0", ok, dropped)
	}
}

// TestBudgetNoTimerWithoutRefusal: lines within the budget start no timer.
func TestBudgetNoTimerWithoutRefusal(t *testing.T) {
	b := &Budget{PerSecond: 3}
	reports(b)
	at := time.Unix(1000, 0)
	for i := range 9 {
		b.Take(at.Add(time.Duration(i/3) * time.Second))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.timer != nil || b.pending {
		t.Fatal("a timer was started with nothing refused")
	}
}

// TestBudgetConcurrentLosesNothing: lines let through, counts handed to
// Take and counts reported add up to the lines asked for, on the real
// clock over more than one second.
func TestBudgetConcurrentLosesNothing(t *testing.T) {
	b := &Budget{PerSecond: 50}
	var reported atomic.Int64
	b.Report = func(dropped int64, _ slog.Level) { reported.Add(dropped) }
	var asked, passed, taken atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(1200 * time.Millisecond)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				asked.Add(1)
				ok, dropped := b.Take(time.Now())
				if ok {
					passed.Add(1)
				}
				taken.Add(dropped)
				time.Sleep(10 * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	// End on a burst within one instant, over the budget: its drops are
	// left for the timer to report. On a loaded machine the goroutines'
	// last second may have held fewer takes than the budget, leaving
	// nothing to report.
	last := time.Now()
	for range 3 * b.PerSecond {
		asked.Add(1)
		ok, dropped := b.Take(last)
		if ok {
			passed.Add(1)
		}
		taken.Add(dropped)
	}
	deadline := time.Now().Add(3 * time.Second)
	for passed.Load()+taken.Load()+reported.Load() != asked.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("%d let through + %d taken + %d reported, want the %d asked for",
				passed.Load(), taken.Load(), reported.Load(), asked.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if reported.Load() == 0 {
		t.Error("nothing reported after the burst")
	}
}

// BenchmarkBudgetTakeRefused: a refused line, the proxy's per-request
// cost while a client is refused.
func BenchmarkBudgetTakeRefused(b *testing.B) {
	bg := &Budget{PerSecond: 1, Report: func(int64, slog.Level) {}}
	at := time.Unix(1000, 0)
	b.ReportAllocs()
	for b.Loop() {
		bg.Take(at)
	}
}

// TestBudgetAllow: Allow hands a count the line takes to Report, before
// saying the line may be written, and reports it once.
func TestBudgetAllow(t *testing.T) {
	b := &Budget{PerSecond: 1}
	var got []int64
	b.Report = func(dropped int64, _ slog.Level) { got = append(got, dropped) }
	b.timer = time.AfterFunc(time.Hour, func() {}) // no report from the timer here
	at := time.Unix(2000, 0)
	if !b.Allow(at, slog.LevelWarn) {
		t.Fatal("first line refused")
	}
	for range 4 {
		if b.Allow(at, slog.LevelWarn) {
			t.Fatal("a line over the budget let through")
		}
	}
	if !b.Allow(at.Add(time.Second), slog.LevelWarn) || len(got) != 1 || got[0] != 4 {
		t.Fatalf("next second: reports %v, want [4] before the line", got)
	}
	if !b.Allow(at.Add(2*time.Second), slog.LevelWarn) || len(got) != 1 {
		t.Fatalf("later: reports %v, want the count reported once", got)
	}
	b.timer.Stop()
}

// levelReport is what a Budget's Report is given.
type levelReport struct {
	dropped int64
	level   slog.Level
}

// levelReports collects what a Budget's Report is given, level included.
func levelReports(b *Budget) <-chan levelReport {
	ch := make(chan levelReport, 16)
	b.Report = func(dropped int64, level slog.Level) { ch <- levelReport{dropped, level} }
	return ch
}

// TestBudgetReportLevel: a count is reported with the most severe level
// among the lines it counts, so that the count of error lines left out is
// written at error (LOG_LEVEL=error showed the error lines let through,
// but not the warning that counted those left out). Each count has its
// own level: one of warnings only after one with an error is a warning.
func TestBudgetReportLevel(t *testing.T) {
	b := &Budget{PerSecond: 1}
	ch := levelReports(b)
	at := time.Unix(3000, 0)
	b.Allow(at, slog.LevelWarn)
	b.Allow(at, slog.LevelWarn)
	b.Allow(at, slog.LevelError)
	b.Allow(at, slog.LevelWarn)
	// Handed over by the first line of the next second.
	b.Allow(at.Add(time.Second), slog.LevelWarn)
	if got := <-ch; got.dropped != 3 || got.level != slog.LevelError {
		t.Fatalf("handed over: %d at %v, want 3 at ERROR", got.dropped, got.level)
	}
	// Reported by the timer: warnings only.
	b.Allow(at.Add(time.Second), slog.LevelWarn)
	b.Allow(at.Add(time.Second), slog.LevelInfo)
	select {
	case got := <-ch:
		if got.dropped != 2 || got.level != slog.LevelWarn {
			t.Fatalf("timer: %d at %v, want 2 at WARN", got.dropped, got.level)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no report within 3 s")
	}
	// An error the timer reports. The timer's line took a line of the
	// real clock's second, which the budget is at now: a line of an
	// earlier second would count in it, so these are of a later one.
	later := time.Now().Add(time.Second)
	b.Allow(later, slog.LevelWarn)
	b.Allow(later, slog.LevelError)
	select {
	case got := <-ch:
		if got.dropped != 1 || got.level != slog.LevelError {
			t.Fatalf("timer: %d at %v, want 1 at ERROR", got.dropped, got.level)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no report within 3 s")
	}
}

// TestBudgetClose: Close reports a pending count at once, exactly once;
// the timer that was armed writes nothing after it, nor does another
// Close.
func TestBudgetClose(t *testing.T) {
	b := &Budget{PerSecond: 3}
	ch := levelReports(b)
	at := time.Unix(1000, 0)
	for range 10 {
		b.Allow(at, slog.LevelError)
	}
	b.Close()
	select {
	case got := <-ch:
		if got.dropped != 7 || got.level != slog.LevelError {
			t.Fatalf("Close reported %d at %v, want 7 at ERROR", got.dropped, got.level)
		}
	default:
		t.Fatal("Close returned before the count was reported")
	}
	b.Close()
	select {
	case got := <-ch:
		t.Fatalf("reported again after Close: %+v", got)
	case <-time.After(1500 * time.Millisecond): // past the timer's second
	}
	// Refused after Close: no timer; a later line takes the count.
	b.Allow(at, slog.LevelWarn)
	select {
	case got := <-ch:
		t.Fatalf("a timer reported after Close: %+v", got)
	case <-time.After(1500 * time.Millisecond):
	}
	b.Allow(at.Add(time.Second), slog.LevelWarn)
	if got := <-ch; got.dropped != 1 {
		t.Fatalf("after Close, the next second's line handed over %d, want 1", got.dropped)
	}
}

// TestBudgetCloseNothingPending: a Close with nothing left out writes
// nothing, whether lines were refused (and their count taken) or not;
// lines refused after it start no timer, and their count goes to the
// next Close.
func TestBudgetCloseNothingPending(t *testing.T) {
	b := &Budget{PerSecond: 1}
	ch := levelReports(b)
	b.Close()
	at := time.Unix(1000, 0)
	b2 := &Budget{PerSecond: 1}
	ch2 := levelReports(b2)
	b2.Allow(at, slog.LevelWarn)
	b2.Allow(at, slog.LevelWarn)
	b2.Allow(at.Add(time.Second), slog.LevelWarn) // takes the count
	<-ch2
	b2.Close()
	b.Allow(at, slog.LevelWarn)
	b.Allow(at, slog.LevelWarn)
	select {
	case got := <-ch:
		t.Fatalf("Close of an unused budget, or a timer after it, reported %+v", got)
	case got := <-ch2:
		t.Fatalf("Close with the count taken reported %+v", got)
	case <-time.After(1500 * time.Millisecond):
	}
	b.Close()
	if got := <-ch; got.dropped != 1 {
		t.Fatalf("the next Close reported %d, want the 1 refused after the first", got.dropped)
	}
}

// TestBudgetCloseWaitsForTimer: a Close while the timer is writing its
// report returns once it is written, and writes nothing itself: a
// service's last line comes after it.
func TestBudgetCloseWaitsForTimer(t *testing.T) {
	b := &Budget{PerSecond: 1}
	started, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	var written atomic.Bool
	b.Report = func(int64, slog.Level) {
		if calls.Add(1) == 1 {
			close(started)
			<-release
		}
		written.Store(true)
	}
	at := time.Unix(1000, 0)
	b.Take(at)
	b.Take(at)
	select {
	case <-started:
	case <-time.After(3 * time.Second):
		t.Fatal("no report within 3 s")
	}
	closed := make(chan struct{})
	go func() { b.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while the timer was writing its report")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-closed
	if !written.Load() || calls.Load() != 1 {
		t.Fatalf("%d reports, written %v: want the timer's one, before Close returned", calls.Load(), written.Load())
	}
}

// TestBudgetTimerLineIsTheSecondsLine: the count the timer writes is one
// of the lines of its second, so a budget of one line a second whose
// count goes in its line (Take) writes one line in that second, not the
// timer's and then a later line's too; the line refused is counted and
// reported about a second later.
func TestBudgetTimerLineIsTheSecondsLine(t *testing.T) {
	b := &Budget{PerSecond: 1}
	ch := reports(b)
	// Begin just after a second starts: the report comes about a second
	// later, well inside the next one.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 50*time.Millisecond)))
	b.Take(time.Now())
	b.Take(time.Now())
	wantReport(t, ch, 1)
	if ok, dropped := b.Take(time.Now()); ok || dropped != 0 {
		t.Fatalf("in the second of the timer's line: %v, %d dropped, want refused (one line a second)", ok, dropped)
	}
	wantReport(t, ch, 1)
}

// TestCountLine: the count line is msg at CountLevel (a warning, an error
// when errors were left out), with the count and the budget's per_second.
func TestCountLine(t *testing.T) {
	for _, tt := range []struct {
		left, want slog.Level
	}{{slog.LevelInfo, slog.LevelWarn}, {slog.LevelWarn, slog.LevelWarn}, {slog.LevelError, slog.LevelError}} {
		var buf bytes.Buffer
		report := CountLine(slog.New(slog.NewJSONHandler(&buf, nil)), "things not logged", 7)
		report(42, tt.left)
		var rec struct {
			Level     string
			Msg       string
			Count     int64
			PerSecond int `json:"per_second"`
		}
		if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
			t.Fatalf("%q: %v", buf.String(), err)
		}
		if rec.Level != tt.want.String() || rec.Msg != "things not logged" || rec.Count != 42 || rec.PerSecond != 7 {
			t.Errorf("lines left out at %v: %s, want %v things not logged, count 42, per_second 7", tt.left, buf.String(), tt.want)
		}
	}
}

// TestBudgetSecondsOutOfOrder: a line whose time is of a second before
// the budget's current one (a proxy's upstream failure is timed by its
// request's start, and a request that waited out a timeout fails beside
// one refused at once; concurrent callers read the clock before the
// lock) counts in the current second. It reset the budget to that older
// second, and the next line of the current one reset it again: lines of
// two seconds taking turns were all let through, however many.
func TestBudgetSecondsOutOfOrder(t *testing.T) {
	b := &Budget{PerSecond: 3}
	at := time.Unix(4000, 0)
	passed, dropped := 0, int64(0)
	for i := range 100 {
		ok, d := b.Take(at.Add(time.Duration(1-i%2) * time.Second)) // at+1s, at, at+1s, ...
		if ok {
			passed++
		}
		dropped += d
	}
	if passed > 2*b.PerSecond {
		t.Fatalf("%d of 100 lines of two seconds let through, want at most %d", passed, 2*b.PerSecond)
	}
	if ok, d := b.Take(at.Add(2 * time.Second)); !ok || int64(passed)+dropped+d != 100 {
		t.Fatalf("next second: %v, %d let through + %d dropped, want every one of the 100 accounted for", ok, passed, dropped+d)
	}
}

// TestBudgetFollowsTheClockSetBack: a line more than clockStepBack
// seconds before the budget's second is the wall clock set back (an NTP
// step), which the budget follows; counted in the later second instead,
// every line but the first PerSecond would be refused until the clock
// came back to it.
func TestBudgetFollowsTheClockSetBack(t *testing.T) {
	b := &Budget{PerSecond: 2}
	at := time.Unix(4000, 0)
	for range 3 {
		b.Take(at)
	}
	back := at.Add(-(clockStepBack + 1) * time.Second)
	for s := range 3 {
		for i := range 2 {
			if ok, _ := b.Take(back.Add(time.Duration(s) * time.Second)); !ok {
				t.Fatalf("second %d after the clock was set back: line %d refused", s, i)
			}
		}
	}
}
