package main

import (
	"bufio"
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// sample is one scrape of a Prometheus text endpoint: metric name (without
// labels) → sum over all its series.
type sample map[string]float64

func scrape(url string) sample {
	s := sample{}
	status, body, err := fasthttp.GetTimeout(nil, url, 5*time.Second)
	if err != nil || status != 200 {
		return s
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
			rest = line[i:]
		}
		// Keep the label set for lookups that need it: name{labels}.
		labels := ""
		if strings.HasPrefix(rest, "{") {
			if j := strings.Index(rest, "}"); j >= 0 {
				labels = rest[:j+1]
				rest = rest[j+1:]
			}
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		s[name] += v
		if labels != "" {
			s[name+labels] += v
		}
	}
	return s
}

// delta returns after[name]-before[name].
func delta(before, after sample, name string) float64 { return after[name] - before[name] }

// find returns the first metric name present in s that contains every
// fragment (metric names differ slightly between versions; the report
// names the metric it used).
func (s sample) find(fragments ...string) string {
	best := ""
	for name := range s {
		if strings.Contains(name, "{") {
			continue
		}
		ok := true
		for _, f := range fragments {
			if !strings.Contains(name, f) {
				ok = false
				break
			}
		}
		if ok && (best == "" || len(name) < len(best)) {
			best = name
		}
	}
	return best
}

// labelled sums the series of name whose label set contains every fragment.
func (s sample) labelled(name string, fragments ...string) float64 {
	var sum float64
	for k, v := range s {
		if !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for _, f := range fragments {
			if !strings.Contains(k, f) {
				ok = false
				break
			}
		}
		if ok {
			sum += v
		}
	}
	return sum
}

// counterDelta is the change of one series between two scrapes.
type counterDelta struct {
	series string
	delta  float64
}

func (c counterDelta) String() string { return fmt.Sprintf("%s +%g", c.series, c.delta) }

// changedCounters lists the labelled series of the named metrics that
// changed between two scrapes, in name order.
func changedCounters(before, after sample, names ...string) []counterDelta {
	var out []counterDelta
	for k, v := range after {
		for _, n := range names {
			if strings.HasPrefix(k, n+"{") && v != before[k] {
				out = append(out, counterDelta{k, v - before[k]})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].series < out[j].series })
	return out
}
