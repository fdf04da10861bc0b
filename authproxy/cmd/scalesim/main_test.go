package main

import (
	"slices"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	o, err := parse([]string{"-subscribers", "10, 100", "-rates", "5", "-duration", "1s", "-cluster=false"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.subscribers, []int{10, 100}) || !slices.Equal(o.rates, []int{5}) || o.duration != time.Second || o.cluster {
		t.Fatalf("parsed %+v", o)
	}
	d, err := parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.subscribers, []int{10, 100, 1000}) || !slices.Equal(d.rates, []int{10, 100, 1000}) || d.proxies != 1000 {
		t.Fatalf("defaults %+v", d)
	}
	for _, bad := range [][]string{
		{"-subscribers", "10,x"}, {"-subscribers", "0"}, {"-rates", ""}, {"-rates", "-5"},
		{"-duration", "0s"}, {"-proxies", "0"}, {"-max-fetches", "0"}, {"-nonsense"},
	} {
		if _, err := parse(bad); err == nil {
			t.Errorf("parse(%v) accepted", bad)
		}
	}
}
