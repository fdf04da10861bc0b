package server

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// WarmBytes is what the warm state of a cached token really costs: the
// live heap after building it, signed, for n typical tokens, over n.
func TestWarmBytesMeasured(t *testing.T) {
	const n = 20_000
	signer, err := identity.NewKeySigner(testenv.CoreKey)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Unix()
	cls := make([]*tokens.Claims, n)
	pes := make([]*projection.Entry, n)
	for i := range cls {
		sub, tid := fmt.Sprintf("0193a1f2-7c4d-7e0a-9b1c-%012d", i), "0193a1f2-7c4d-7e0a-9b1c-5d2e8f3a6b10"
		cls[i] = &tokens.Claims{Sub: sub, Tid: tid, Sid: fmt.Sprintf("0193a1f3-0000-7e0a-9b1c-%012d", i),
			TV: 3, Exp: now + 900, Iat: now, AMR: []string{"pwd"}, AuthTime: now}
		p := &identity.Projection{UserID: sub, TenantID: tid, Roles: []string{"member", "editor"},
			Permissions: []string{"notes:read", "notes:write", "tenant:read", "users:read", "roles:read",
				"files:read", "files:write", "comments:write"}, EmailVerified: true}
		pes[i] = projection.Of(p)
	}
	newWarm(cls[0], pes[0]).signed(cls[0], signer) // the signer's pads
	ws := make([]*warm, n)
	before := liveHeap()
	for i := range ws {
		ws[i] = newWarm(cls[i], pes[i]).signed(cls[i], signer)
	}
	after := liveHeap()
	per := float64(after-before) / n
	t.Logf("the warm state of a cached token costs %.0f bytes (WarmBytes %d)", per, WarmBytes)
	if per < WarmBytes*0.7 || per > WarmBytes*1.3 {
		t.Fatalf("measured %.0f bytes per token, WarmBytes is %d: set it to the measurement", per, WarmBytes)
	}
	runtime.KeepAlive(ws)
	runtime.KeepAlive(cls)
	runtime.KeepAlive(pes)
}

// liveHeap is the heap still in use after a full collection.
func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func TestAppendHex(t *testing.T) {
	for _, v := range []uint64{0, 1, 9, 10, 15, 16, 255, 256, 0xdeadbeef, 1<<63 - 1, 1 << 63, ^uint64(0)} {
		if got, want := string(appendHex([]byte("id-"), v)), "id-"+strconv.FormatUint(v, 16); got != want {
			t.Fatalf("%d: %q, want %q", v, got, want)
		}
	}
}
