package tenantapi

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

var jsonStrings = []string{"", "Zoë <z@x.test>", "tab\there \"quoted\" back\\slash", "bad \xff utf8", "line\u2028sep", "\x00\x1f&"}

// fill sets every exported field of the struct v points to from seed, so a
// field added to the type but not to AppendJSON shows up as a difference.
func fill(v any, seed int) {
	rv := reflect.ValueOf(v).Elem()
	for i := range rv.NumField() {
		f := rv.Field(i)
		if !f.CanSet() {
			continue
		}
		k := seed + i
		switch f.Interface().(type) {
		case string:
			f.SetString(jsonStrings[k%len(jsonStrings)])
		case bool:
			f.SetBool(k%2 == 0)
		case int64:
			f.SetInt(int64(k))
		case []string:
			switch k % 3 {
			case 0:
				f.Set(reflect.ValueOf([]string(nil)))
			case 1:
				f.Set(reflect.ValueOf([]string{}))
			default:
				f.Set(reflect.ValueOf(append([]string{"member", "a<b"}, jsonStrings...)))
			}
		case time.Time:
			zones := []*time.Location{time.UTC, time.Local, time.FixedZone("X", 5*3600+1800)}
			f.Set(reflect.ValueOf(time.Date(2000+k, time.Month(1+k%12), 1+k%28, k%24, k%60, k%60, k*12345000%1e9, zones[k%3])))
		default:
			panic("fill: field " + rv.Type().Field(i).Name + " of an unhandled type: extend fill and AppendJSON")
		}
	}
}

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	for seed := range 12 {
		var m member
		fill(&m, seed)
		want, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.AppendJSON([]byte("prefix")); string(got[6:]) != string(want) || string(got[:6]) != "prefix" {
			t.Errorf("Member seed %d:\n got %s\nwant %s", seed, got, want)
		}
		var profile me
		fill(&profile, seed)
		want, err = json.Marshal(profile)
		if err != nil {
			t.Fatal(err)
		}
		if got := profile.AppendJSON(nil); string(got) != string(want) {
			t.Errorf("Me seed %d:\n got %s\nwant %s", seed, got, want)
		}
	}
}
