package mail

import (
	"bytes"
	"embed"
	"errors"
	htmltemplate "html/template"
	"net/url"
	"strings"
	texttemplate "text/template"
	"time"
	"unicode"
)

//go:embed templates
var templateFS embed.FS

// kindTemplates are one kind's subject, plain-text and HTML templates.
type kindTemplates struct {
	subject *texttemplate.Template
	text    *texttemplate.Template
	html    *htmltemplate.Template
}

// templates holds every kind; templates/<kind>.subject, .txt and .html.
var templates = mustLoad(KindVerifyEmail, KindPasswordReset, KindInvitation, KindEmailChanged,
	KindPasswordChanged, KindMFAEnabled, KindMFADisabled, KindMFAReset, KindRecoveryCodes,
	KindIdentityLinked, KindIdentityUnlinked, KindAccountDeleted)

func funcs() map[string]any {
	return map[string]any{
		"date": func(t time.Time) string { return t.UTC().Format("2 January 2006 15:04 MST") },
	}
}

func mustLoad(kinds ...Kind) map[Kind]kindTemplates {
	out := map[Kind]kindTemplates{}
	for _, k := range kinds {
		read := func(ext string) string {
			b, err := templateFS.ReadFile("templates/" + string(k) + ext)
			if err != nil {
				panic(err)
			}
			return string(b)
		}
		out[k] = kindTemplates{
			subject: texttemplate.Must(texttemplate.New("subject").Funcs(funcs()).Parse(strings.TrimSpace(read(".subject")))),
			text:    texttemplate.Must(texttemplate.New("text").Funcs(funcs()).Parse(read(".txt"))),
			html:    htmltemplate.Must(htmltemplate.New("html").Funcs(funcs()).Parse(read(".html"))),
		}
	}
	return out
}

// Links are where the mailed links point: URL templates in which {token}
// is replaced by the (query-escaped) token.
type Links struct {
	VerifyEmail      string
	ResetPassword    string
	AcceptInvitation string
	// ForgotPassword is the page that mails a reset link (no token), to
	// which the security notices point.
	ForgotPassword string
}

// DefaultLinks are the pages coreapi serves itself under base (the
// public base URL, e.g. http://localhost:8080). The forgot page is
// coreapi's own even when an app's page takes the reset link's token
// (RESET_PASSWORD_URL): that template says where a token goes, not where
// one is asked for.
func DefaultLinks(base string) Links {
	base = strings.TrimRight(base, "/")
	return Links{
		VerifyEmail:      base + "/verify-email?token={token}",
		ResetPassword:    base + "/reset-password?token={token}",
		AcceptInvitation: base + "/accept-invitation?token={token}",
		ForgotPassword:   base + "/reset-password",
	}
}

// CheckLinkTemplate reports whether s is an absolute http(s) URL template
// containing {token}.
func CheckLinkTemplate(s string) error {
	if !strings.Contains(s, "{token}") {
		return errors.New("must contain {token}")
	}
	u, err := url.Parse(strings.ReplaceAll(s, "{token}", "t"))
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return errors.New("must be an absolute http or https URL")
	}
	return nil
}

func (l Links) of(k Kind) string {
	switch k {
	case KindVerifyEmail:
		return l.VerifyEmail
	case KindPasswordReset:
		return l.ResetPassword
	case KindInvitation:
		return l.AcceptInvitation
	case KindPasswordChanged, KindMFAEnabled, KindMFADisabled, KindMFAReset, KindRecoveryCodes,
		KindIdentityLinked, KindIdentityUnlinked:
		return l.ForgotPassword
	}
	return "" // a kind without a link
}

// Rendered is a message ready for a transport.
type Rendered struct {
	To      string
	Subject string
	Text    string
	HTML    string
}

// view is what the templates see.
type view struct {
	Data
	To   string
	Link string
}

// Render builds the message of kind k for to, with the token's link.
func (l Links) Render(k Kind, to, token string, d Data) (Rendered, error) {
	t, ok := templates[k]
	if !ok {
		return Rendered{}, errors.New("mail: unknown kind " + string(k))
	}
	v := view{Data: d, To: to, Link: strings.ReplaceAll(l.of(k), "{token}", url.QueryEscape(token))}
	// Names come from users: no line breaks may reach a header, and
	// none may show in another order than stored.
	v.DisplayName, v.TenantName, v.InviterName = ShownName(v.DisplayName), ShownName(v.TenantName), ShownName(v.InviterName)
	v.NewAddress, v.Provider = ShownName(v.NewAddress), ShownName(v.Provider)
	var subj, text, html bytes.Buffer
	if err := t.subject.Execute(&subj, v); err != nil {
		return Rendered{}, err
	}
	if err := t.text.Execute(&text, v); err != nil {
		return Rendered{}, err
	}
	if err := t.html.Execute(&html, v); err != nil {
		return Rendered{}, err
	}
	return Rendered{To: to, Subject: oneLine(subj.String()), Text: text.String(), HTML: html.String()}, nil
}

// ShownName is a name as a mail shows it: on one line (oneLine) and
// without bidirectional embeddings, overrides and isolates (U+202A-U+202E,
// U+2066-U+2069), with which "Acme" + U+202E + "moc.live" reads as
// "Acmeevil.com". The API refuses them in names (httpapi.PlainText), but
// a name stored before it did, by the first release, still holds them.
// The pages the mailed links open show names the same way.
func ShownName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 {
			return -1
		}
		return r
	}, oneLine(s))
}

// oneLine replaces control characters with spaces: C0 (CR, LF, NUL...),
// DEL, and C1 (U+0080-U+009F), among which NEL (U+0085) is a line break
// to Unicode and to many mail clients; and the line and paragraph
// separators.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
}
