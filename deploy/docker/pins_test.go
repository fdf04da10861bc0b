package docker

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	pinned      = regexp.MustCompile(`@sha256:[0-9a-f]{64}(\s|$)`)
	unpinnedTag = "# unpinned: "
)

// unpinnedFroms lists the FROM lines of a Dockerfile that carry no digest
// and no "# unpinned: <why>" note on the line above.
func unpinnedFroms(text string) []string {
	var bad []string
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "FROM ") || strings.Contains(l, " scratch") {
			continue
		}
		if pinned.MatchString(l) {
			continue
		}
		if i > 0 && strings.HasPrefix(lines[i-1], unpinnedTag) && len(strings.TrimSpace(strings.TrimPrefix(lines[i-1], unpinnedTag))) > 10 {
			continue
		}
		bad = append(bad, l)
	}
	return bad
}

// TestBaseImagesPinnedOrExcepted: every base image is pinned by digest, or
// the exception is written right above it (the repository is built and
// tested offline, where no digest can be looked up; scripts/pin-images.sh
// pins them where a registry answers).
func TestBaseImagesPinnedOrExcepted(t *testing.T) {
	for file := range images {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range unpinnedFroms(string(b)) {
			t.Errorf("%s: %q has no @sha256 digest and no %q note above it", file, l, unpinnedTag)
		}
	}
	for text, want := range map[string]int{
		"FROM golang:1.26 AS build\n":                                        1,
		"# unpinned: short\nFROM golang:1.26\n":                              1,
		"# unpinned: offline, see docs\nFROM golang:1.26\n":                  0,
		"FROM golang:1.26@sha256:" + strings.Repeat("a", 64) + " AS build\n": 0,
		"FROM scratch\n": 0,
	} {
		if got := len(unpinnedFroms(text)); got != want {
			t.Errorf("%q: %d unpinned, want %d", text, got, want)
		}
	}
}

// TestPinImagesScript runs scripts/pin-images.sh on copies of the
// Dockerfiles with a stand-in registry: every FROM gets the digest of its
// expanded tag, the exception notes go, the result still parses, and a
// second run with new digests moves the pins (the update path).
func TestPinImagesScript(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "digest.sh")
	// The stand-in answers sha256(salt + image), and logs what it was asked.
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"$1\" >>\""+dir+"/asked\"\nprintf 'sha256:%s\\n' \"$(printf '%s%s' \"$SALT\" \"$1\" | sha256sum | cut -c1-64)\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	digest := func(salt, image string) string {
		h := sha256.Sum256([]byte(salt + image))
		return "sha256:" + hex.EncodeToString(h[:])
	}
	var files []string
	for file := range images {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	run := func(salt string) {
		t.Helper()
		cmd := exec.Command("bash", append([]string{filepath.Join("..", "..", "scripts", "pin-images.sh")}, files...)...)
		cmd.Env = append(os.Environ(), "DIGEST_CMD="+fake, "SALT="+salt)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("pin-images.sh: %v\n%s", err, out)
		}
	}
	for _, salt := range []string{"first", "second"} {
		run(salt)
		for _, p := range files {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			text := string(b)
			if strings.Contains(text, unpinnedTag) {
				t.Errorf("%s: the exception note stayed after pinning", p)
			}
			for _, want := range []string{
				"FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}@" + digest(salt, "golang:1.26") + " AS build\n",
				"FROM gcr.io/distroless/static-debian12:nonroot@" + digest(salt, "gcr.io/distroless/static-debian12:nonroot") + "\n",
			} {
				if !strings.Contains(text, want) {
					t.Errorf("%s after the %s run lacks %q", p, salt, want)
				}
			}
			if strings.Count(text, "@sha256:") != 2 {
				t.Errorf("%s: %d digests, want 2 (a second run replaces, never appends)", p, strings.Count(text, "@sha256:"))
			}
			if bad := unpinnedFroms(text); len(bad) != 0 {
				t.Errorf("%s: still unpinned: %q", p, bad)
			}
			f, _ := os.Open(p)
			stages, err := parseDockerfile(f)
			f.Close()
			if err != nil || len(stages) != 2 {
				t.Errorf("%s: %d stages, %v", p, len(stages), err)
			}
			for _, st := range stages {
				checkBaseImage(t, st.From)
			}
		}
	}
	asked, _ := os.ReadFile(filepath.Join(dir, "asked"))
	if !strings.Contains(string(asked), "golang:1.26\n") || strings.Contains(string(asked), "${") {
		t.Errorf("the registry was asked %q; want the ARG-expanded golang:1.26", asked)
	}
}
