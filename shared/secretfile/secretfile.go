// Package secretfile checks that a file holding a secret (a private
// signing key, an HMAC or encryption key, a pepper, a connection URL with
// its password) is not open to every user of the host, as OpenSSH checks a private key's mode, and reads such
// files with a bound on their size.
//
// It warns rather than refuses. Access by the file's group is allowed:
// Kubernetes mounts a Secret volume with the pod's fsGroup as the files'
// group, and the manifests use defaultMode 0440 so that a non-root
// container can read it. Access by others is not: that is a Secret volume
// left at Kubernetes' default mode 0644, or a key file made with the
// usual umask. Refusing to start would break deployments whose only way
// to let the container's user read a bind-mounted file is to make it
// world-readable, so the service starts and says which file to fix.
package secretfile

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
)

// OtherAccess is the permission bits a secret file should not have: any
// access by users other than its owner and group.
const OtherAccess fs.FileMode = 0o007

// Check returns a warning naming name (the variable the path came from)
// when the file at path, followed through symbolic links (a Secret
// volume's files are links into its ..data directory), grants any access
// to other users; "" otherwise. A file that cannot be examined yields ""
// too: reading it reports the problem. Windows file modes say nothing of
// the ACLs, so nothing is checked there.
func Check(name, path string) string {
	if runtime.GOOS == "windows" {
		return ""
	}
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return ""
	}
	if m := fi.Mode().Perm(); m&OtherAccess != 0 {
		return fmt.Sprintf("%s: %s holds a secret but is open to other users (mode %04o): any user or process on the host can read it; "+
			"remove their access (chmod o-rwx, or defaultMode 0440 or 0400 on a Kubernetes Secret volume)", name, path, m)
	}
	return ""
}

// MaxSize is the most a key file may hold: room for a thousand keys of
// the lists the services read, or a 16,384-bit RSA key in PEM.
const MaxSize = 64 << 10

// Read returns the contents of the key file at path, refusing one of more
// than MaxSize bytes with an error naming it: a variable pointed at the
// wrong file (a log, a disk image, /dev/zero or /dev/urandom) would
// otherwise be read whole into memory, and a device without end until the
// process is killed, instead of stopping the start with a clear error.
func Read(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%s: more than %d KiB: not a key file", path, MaxSize>>10)
	}
	return b, nil
}
