package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/tollgate-auth/tollgate/shared/identity"
)

// ensureSigningKey makes sure dir holds at least one *.pem signing key,
// generating one with `coreapi keys generate` otherwise. It reports whether
// it created one.
func ensureSigningKey(ctx context.Context, coreapi, dir string, logs io.Writer) (bool, error) {
	pems, err := filepath.Glob(filepath.Join(dir, "*.pem"))
	if err != nil {
		return false, fmt.Errorf("signing keys: %w", err)
	}
	if len(pems) > 0 {
		return false, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("signing keys: %w", err)
	}
	cmd := exec.CommandContext(ctx, coreapi, "keys", "generate", "-dir", dir)
	out := newPrefixWriter(logs, "keys      | ")
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Run()
	out.Flush()
	if err != nil {
		return false, fmt.Errorf("coreapi keys generate: %w", err)
	}
	if pems, _ := filepath.Glob(filepath.Join(dir, "*.pem")); len(pems) == 0 {
		return false, fmt.Errorf("coreapi keys generate wrote no *.pem into %s", dir)
	}
	return true, nil
}

// ensureHMACKey makes sure path holds a valid identity HMAC key (base64 of
// 32 random bytes, mode 0600), creating it if absent. An existing file that
// does not parse is an error and is left untouched: deleting it would break
// nothing here, but it may be a key someone meant to keep.
func ensureHMACKey(path string) (bool, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if _, err := identity.ParseKey(string(b)); err != nil {
			return false, fmt.Errorf("%s: %w (fix or delete the file)", path, err)
		}
		return false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("identity key: %w", err)
	}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return false, fmt.Errorf("identity key: %w", err)
	}
	if err := writeNew(path, base64.StdEncoding.EncodeToString(key[:])+"\n"); err != nil {
		return false, fmt.Errorf("identity key: %w", err)
	}
	return true, nil
}

// ensureAppKey makes sure path holds a valid key list for an app upstream
// whose first key has id ("app-notes:base64", mode 0600), creating it with
// a fresh 32-byte secret if absent. The same file is the app's
// TOLLGATE_IDENTITY_KEYS_FILE and the proxy's UPSTREAM_KEYS_FILE. An
// existing file that does not parse, or whose first key has another id,
// is an error and is left untouched.
func ensureAppKey(path, id string) (bool, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		keys, err := identity.ParseKeys(string(b))
		if err != nil {
			return false, fmt.Errorf("%s: %w (fix or delete the file)", path, err)
		}
		if len(keys) == 0 || keys[0].ID != id {
			return false, fmt.Errorf("%s: the first key must have id %q (fix or delete the file)", path, id)
		}
		return false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("app key: %w", err)
	}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return false, fmt.Errorf("app key: %w", err)
	}
	if err := writeNew(path, id+":"+base64.StdEncoding.EncodeToString(key[:])+"\n"); err != nil {
		return false, fmt.Errorf("app key: %w", err)
	}
	return true, nil
}

// mfaKeyID is the id of the MFA encryption key the stack creates.
const mfaKeyID = "mfa1"

// ensureMFAKey makes sure path holds a valid MFA_ENCRYPTION_KEYS list
// ("id:base64" of 32 random bytes, mode 0600), creating it with a fresh
// key if absent. coreapi encrypts TOTP secrets at rest with it, so it must
// survive restarts: a new key would make every enrolled factor unusable.
// An existing file that does not parse, or holds a secret of another
// length than 32 bytes (AES-256), is an error and is left untouched.
func ensureMFAKey(path string) (bool, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		keys, err := identity.ParseKeys(string(b))
		if err == nil && len(keys) == 0 {
			err = errors.New("no key")
		}
		for _, k := range keys {
			if err == nil && len(k.Secret) != 32 {
				err = fmt.Errorf("key %s has %d bytes, want 32", k.ID, len(k.Secret))
			}
		}
		if err != nil {
			return false, fmt.Errorf("%s: %w (fix or delete the file; deleting it makes enrolled second factors unusable)", path, err)
		}
		return false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("mfa key: %w", err)
	}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return false, fmt.Errorf("mfa key: %w", err)
	}
	if err := writeNew(path, mfaKeyID+":"+base64.StdEncoding.EncodeToString(key[:])+"\n"); err != nil {
		return false, fmt.Errorf("mfa key: %w", err)
	}
	return true, nil
}

// writeNew creates path (and its directory) with mode 0600 and text; it
// never overwrites a file (O_EXCL) and removes a half-written one.
func writeNew(path, text string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// ensureAPIKeyPepper makes sure path holds a valid API_KEY_PEPPER (base64
// of 32 random bytes, mode 0600), creating it if absent. API-key secrets
// are stored under it, so it must survive restarts: a new pepper makes
// every key unusable. An existing file that does not parse, or is shorter
// than 32 bytes, is an error and is left untouched.
func ensureAPIKeyPepper(path string) (bool, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if _, err := identity.ParseKey(string(b)); err != nil {
			return false, fmt.Errorf("%s: %w (fix or delete the file; deleting it makes every API key unusable)", path, err)
		}
		return false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("api key pepper: %w", err)
	}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return false, fmt.Errorf("api key pepper: %w", err)
	}
	if err := writeNew(path, base64.StdEncoding.EncodeToString(key[:])+"\n"); err != nil {
		return false, fmt.Errorf("api key pepper: %w", err)
	}
	return true, nil
}
