package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Mailpit is the mail catcher `make run` starts unless SMTP_URL is set: a
// program built from the Go module proxy (never a downloaded binary).
const (
	mailpitModule  = "github.com/axllent/mailpit"
	mailpitVersion = "v1.33.1"
)

// mailPlan says where coreapi's mail goes.
type mailPlan struct {
	// mailpit: build and start Mailpit on smtpAddr (SMTP) and uiAddr (web
	// UI and API); else mail goes to smtpURL as the user set it.
	mailpit          bool
	smtpAddr, uiAddr string
	smtpURL          string
}

// planMail decides from SMTP_URL (userSMTP) and the flags.
func planMail(userSMTP string, o options) mailPlan {
	if userSMTP != "" {
		return mailPlan{smtpURL: userSMTP}
	}
	// Mailpit offers no STARTTLS: plain SMTP on loopback.
	return mailPlan{mailpit: true, smtpAddr: o.mailSMTPAddr, uiAddr: o.mailUIAddr,
		smtpURL: "smtp://" + o.mailSMTPAddr + "?starttls=off"}
}

// mailpitArgs are Mailpit's flags: loopback only, no update check, the
// mails kept in mailDir (mailpitDir) between runs.
func (p mailPlan) mailpitArgs(mailDir string) []string {
	return []string{"--smtp", p.smtpAddr, "--listen", p.uiAddr, "--disable-version-check",
		"--database", filepath.Join(mailDir, "mailpit.db")}
}

// mailpitDir returns the directory of Mailpit's database, dataDir/mailpit,
// made (or narrowed) to mode 0700: the database holds every caught mail,
// reset and invitation links included, and Mailpit writes it (and its
// -wal and -shm files) readable by every local user, in a data directory
// that `go build` made world-searchable. A database an earlier run left in
// dataDir itself is moved in.
func mailpitDir(dataDir string) (string, error) {
	dir := filepath.Join(dataDir, "mailpit")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("mailpit directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", fmt.Errorf("mailpit directory: %w", err)
	}
	for _, name := range []string{"mailpit.db", "mailpit.db-wal", "mailpit.db-shm"} {
		old := filepath.Join(dataDir, name)
		if _, err := os.Lstat(old); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := os.Rename(old, filepath.Join(dir, name)); err != nil {
			return "", fmt.Errorf("mailpit directory: move the earlier database in: %w", err)
		}
	}
	return dir, nil
}

// mailpitUser is the user of Mailpit's web UI and API (basic
// authentication): without one, any local user, or any web page the
// developer's browser opens that reaches 127.0.0.1, could read the caught
// mails, password-reset and invitation links included.
const mailpitUser = "tollgate"

// ensureMailpitPassword returns the password of Mailpit's web UI and API,
// kept in path (mode 0600) so that a browser that saved it keeps working
// across runs; created when missing, replaced when it is not one.
func ensureMailpitPassword(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		if pw := strings.TrimSpace(string(b)); validMailpitPassword(pw) {
			return pw, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("mailpit password: %w", err)
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("mailpit password: %w", err)
	}
	pw := hex.EncodeToString(b[:])
	_ = os.Remove(path) // a malformed one (writeNew never overwrites)
	if err := writeNew(path, pw+"\n"); err != nil {
		return "", fmt.Errorf("mailpit password: %w", err)
	}
	return pw, nil
}

// validMailpitPassword: 32 hex digits, as ensureMailpitPassword makes them
// (no character that MP_UI_AUTH's "user:password" list would split on).
func validMailpitPassword(pw string) bool {
	if len(pw) != 32 {
		return false
	}
	_, err := hex.DecodeString(pw)
	return err == nil
}

// mailpitEnv is Mailpit's environment: env and its UI and API user.
func mailpitEnv(env []string, password string) []string {
	return append(env, "MP_UI_AUTH="+mailpitUser+":"+password)
}

// mailpitPath is where ensureMailpit keeps the Mailpit binary it builds
// into dir.
func mailpitPath(dir string) string {
	return filepath.Join(dir, "mailpit-"+mailpitVersion)
}

// moduleCacheProxy is the module cache as a GOPROXY (file://...), or ""
// when go does not name one that holds Mailpit.
func moduleCacheProxy(ctx context.Context, gobin string) string {
	b, err := exec.CommandContext(ctx, gobin, "env", "GOMODCACHE").Output()
	if err != nil {
		return ""
	}
	dl := filepath.Join(strings.TrimSpace(string(b)), "cache", "download")
	if _, err := os.Stat(filepath.Join(dl, filepath.FromSlash(mailpitModule), "@v", mailpitVersion+".zip")); err != nil {
		return ""
	}
	return "file://" + filepath.ToSlash(dl)
}

// ensureMailpit builds Mailpit into dir once (about a minute the first
// time) and returns the binary's path; a binary of this version already
// there is reused.
func ensureMailpit(ctx context.Context, dir string, logs io.Writer) (string, error) {
	path := mailpitPath(dir)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, "mailpit-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	gobin := os.Getenv("GO")
	if gobin == "" {
		gobin = "go"
	}
	// Outside the workspace: Mailpit is a program of its own, built from
	// the module proxy at a pinned version.
	cmd := exec.CommandContext(ctx, gobin, "install", mailpitModule+"@"+mailpitVersion)
	cmd.Dir = tmp
	cmd.Env = append(environ("GOBIN", "GOWORK"), "GOBIN="+tmp, "GOWORK=off")
	out := newPrefixWriter(logs, "mailpit   | ")
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Run()
	out.Flush()
	if err != nil && ctx.Err() == nil {
		// Offline (the module proxy unreachable): go install still asks
		// it for the module's deprecation, even with every module in the
		// cache, as after a `make reset` that removed the binary. The
		// module cache is itself a proxy of what it holds, whose
		// checksums were verified when it was filled.
		if cache := moduleCacheProxy(ctx, gobin); cache != "" {
			fmt.Fprintf(logs, "mailpit   | the module proxy did not answer: building Mailpit from the module cache\n")
			retry := exec.CommandContext(ctx, gobin, "install", mailpitModule+"@"+mailpitVersion)
			retry.Dir = tmp
			retry.Env = append(environ("GOBIN", "GOWORK", "GOPROXY", "GOSUMDB"), "GOBIN="+tmp, "GOWORK=off",
				"GOPROXY="+cache, "GOSUMDB=off")
			retry.Stdout, retry.Stderr = out, out
			if retry.Run() == nil {
				err = nil
			}
			out.Flush()
		}
	}
	if err != nil && ctx.Err() == nil {
		return "", fmt.Errorf("build mailpit %s from the Go module proxy: %w (its output is above); "+
			"to run without it, set SMTP_URL to a mail server of yours (smtp://[user:pass@]host[:port]) and run make run again", mailpitVersion, err)
	}
	if err != nil {
		return "", fmt.Errorf("build mailpit %s: %w", mailpitVersion, err)
	}
	if err := os.Rename(filepath.Join(tmp, "mailpit"), path); err != nil {
		return "", fmt.Errorf("install mailpit: %w", err)
	}
	return path, nil
}
