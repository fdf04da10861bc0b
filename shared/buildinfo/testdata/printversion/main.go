// Command printversion prints its --version line; the package's test builds
// it with and without linker overrides.
package main

import (
	"os"

	"github.com/tollgate-auth/tollgate/shared/buildinfo"
)

func main() {
	if !buildinfo.Requested(os.Args[1:]) {
		os.Exit(2)
	}
	_ = buildinfo.Print(os.Stdout, "printversion")
}
