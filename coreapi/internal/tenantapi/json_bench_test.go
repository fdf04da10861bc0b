package tenantapi

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// benchPage is a member list page like make bench's: 50 members, one
// role each.
func benchPage() []member {
	at := time.Date(2026, 12, 1, 17, 0, 0, 123456000, time.UTC)
	out := make([]member, 50)
	for i := range out {
		out[i] = member{ID: fmt.Sprintf("0b4f1f8e-1111-4c2a-9a53-7a1f7e0c%04d", i), Email: fmt.Sprintf("bench-%d@example.com", i),
			DisplayName: fmt.Sprintf("Bench User %d", i), Status: "active", UserStatus: "active", Roles: []string{"member"},
			CreatedAt: at, UpdatedAt: at}
	}
	return out
}

// BenchmarkEncodeMembers compares encoding/json with AppendJSON on a page
// of 50 members.
func BenchmarkEncodeMembers(b *testing.B) {
	page := benchPage()
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(page); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf = append(buf[:0], '[')
			for i := range page {
				if i > 0 {
					buf = append(buf, ',')
				}
				buf = page[i].AppendJSON(buf)
			}
			buf = append(buf, ']')
		}
	})
}

// BenchmarkEncodeMe compares encoding/json with AppendJSON on a profile.
func BenchmarkEncodeMe(b *testing.B) {
	at := time.Date(2026, 12, 1, 17, 0, 0, 123456000, time.UTC)
	profile := me{ID: "0b4f1f8e-1111-4c2a-9a53-7a1f7e0c0001", Email: "bench-1@example.com", DisplayName: "Bench User 1",
		Status: "active", TenantID: "0b4f1f8e-2222-4c2a-9a53-7a1f7e0c0002", MembershipStatus: "active",
		Roles: []string{"member"}, Permissions: []string{"tenant:read"}, CreatedAt: at, UpdatedAt: at}
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(&profile); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf = profile.AppendJSON(buf[:0])
		}
	})
}
