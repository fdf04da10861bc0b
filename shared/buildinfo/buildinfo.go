// Package buildinfo reports what a Tollgate binary was built from: its
// version, the commit, whether the tree had local changes, and the Go
// version. Every command prints it for --version (or -version), and the
// services export it as a <service>_build_info gauge.
//
// `go build` in a git checkout records the commit itself (vcs.revision and
// vcs.modified in the binary's build information). Builds without the
// repository's metadata (the Docker images build with -buildvcs=false and no
// .git in the context) set both through the linker:
//
//	go build -ldflags "-X github.com/tollgate-auth/tollgate/shared/buildinfo.version=v1.4.0 \
//	  -X github.com/tollgate-auth/tollgate/shared/buildinfo.revision=$(git rev-parse HEAD)" ./coreapi/cmd/coreapi
//
// A value set through the linker wins over the recorded one.
package buildinfo

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// Set with -ldflags "-X github.com/tollgate-auth/tollgate/shared/buildinfo.version=..."
// (and .revision=...); empty means "read the build information".
var (
	version  string
	revision string
)

// Unknown stands for a value the binary does not know.
const Unknown = "unknown"

// Info is what a binary was built from.
type Info struct {
	Version   string // the -ldflags value, else the main module's version ("(devel)" for a local build), else Unknown
	Revision  string // the -ldflags value, else vcs.revision, else Unknown
	Modified  bool   // vcs.modified: the working tree had uncommitted changes
	GoVersion string // the toolchain that built the binary, e.g. go1.26.0
}

// Read returns this binary's Info.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	return fromBuildInfo(bi, ok, version, revision)
}

// fromBuildInfo merges the build information with the linker overrides.
func fromBuildInfo(bi *debug.BuildInfo, ok bool, ldVersion, ldRevision string) Info {
	in := Info{Version: Unknown, Revision: Unknown, GoVersion: Unknown}
	if ok && bi != nil {
		if bi.GoVersion != "" {
			in.GoVersion = bi.GoVersion
		}
		if bi.Main.Version != "" {
			in.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if s.Value != "" {
					in.Revision = s.Value
				}
			case "vcs.modified":
				in.Modified = s.Value == "true"
			}
		}
	}
	if v := strings.TrimSpace(ldVersion); v != "" {
		in.Version = v
	}
	if r := strings.TrimSpace(ldRevision); r != "" {
		in.Revision = r
		in.Modified = false // the linker value names exactly what was built
	}
	return in
}

// String is the --version line: "coreapi v1.4.0 (commit 0123abcd…, modified) go1.26.0".
func (in Info) String(program string) string {
	rev := in.Revision
	if in.Modified {
		rev += ", modified"
	}
	return fmt.Sprintf("%s %s (commit %s) %s", program, in.Version, rev, in.GoVersion)
}

// Labels are the label names and values of the build_info gauge, in the
// order of LabelNames.
func (in Info) Labels() []string {
	rev := in.Revision
	if in.Modified {
		rev += "-modified"
	}
	return []string{in.Version, rev, in.GoVersion}
}

// LabelNames are the build_info gauge's label names.
var LabelNames = []string{"version", "revision", "goversion"}

// Requested reports whether args (without the program name) hold --version
// or -version (also =true) before any "--": every command answers it before
// anything else (configuration, subcommands), so it works wherever the
// binary runs and whatever else the command line says.
func Requested(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "--version", "-version", "--version=true", "-version=true":
			return true
		}
	}
	return false
}

// Print writes the --version line of program to w.
func Print(w io.Writer, program string) error {
	_, err := fmt.Fprintln(w, Read().String(program))
	return err
}
