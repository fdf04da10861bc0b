package lifecycle

import (
	"bytes"
	"context"
	"errors"
	"html/template"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/invitations"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// Paths of the pages the mailed links open (public, at the root).
const (
	PageVerifyEmail      = "/verify-email"
	PageResetPassword    = "/reset-password"
	PageAcceptInvitation = "/accept-invitation"
)

// page is what the template shows: a form posting to Action (form
// encoded, no JavaScript), or the outcome of the last post.
type page struct {
	Title string
	// Invitation is what the invitation link's page accepts (nil on the
	// other pages, and when the link cannot be accepted).
	Invitation *invitationView
	Intro      string // above the form: what it asks for and why
	Action     string
	Token      string
	Done       bool
	Sent       bool
	Error      string
	// NoForm: the page shows Error and no form (a link that cannot be
	// used: posting it could only be refused again).
	NoForm  bool
	Message string
	Fields  []field
	Submit  string
}

// invitationView names who invites whom where, as the mail did (names
// without bidirectional controls: mail.ShownName).
type invitationView struct {
	TenantName, InviterName, Email string
}

type field struct {
	Name, Label, Type, Autocomplete string
	// Value is the field's value as the page fills it in; ReadOnly
	// fields show one the form cannot change.
	Value              string
	Required, ReadOnly bool
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}
label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.4rem}button{margin-top:1rem;padding:.5rem 1rem}
.error{color:#a00}</style></head>
<body><h1>{{.Title}}</h1>
{{if .Done}}<p>{{.Message}}</p>
{{else}}{{if .Error}}<p class="error">{{.Error}}</p>{{end}}
{{if not .NoForm}}{{with .Invitation}}<p>{{if .InviterName}}<bdi>{{.InviterName}}</bdi> invites you{{else}}You are invited{{end}} to join <strong><bdi>{{.TenantName}}</bdi></strong> as <bdi>{{.Email}}</bdi>.</p>
{{end}}{{if .Intro}}<p>{{.Intro}}</p>{{end}}
{{if .Sent}}<p>If an account has this address, a link to reset its password is on its way.</p>{{end}}
<form method="post" action="{{.Action}}">
{{if .Token}}<input type="hidden" name="token" value="{{.Token}}">{{end}}
{{range .Fields}}<label for="{{.Name}}">{{.Label}}</label>
<input id="{{.Name}}" name="{{.Name}}" type="{{.Type}}" autocomplete="{{.Autocomplete}}"{{if .Value}} value="{{.Value}}"{{end}}{{if .ReadOnly}} readonly{{end}}{{if .Required}} required{{end}}>
{{end}}<button type="submit">{{.Submit}}</button>
</form>{{end}}{{end}}
</body></html>
`))

// errorText is what a page says for an error code the API answered.
func errorText(code string) string {
	switch code {
	case problem.CodeLinkInvalid:
		return "This link is not valid: it was already used, replaced by a newer one, or mistyped."
	case problem.CodeLinkExpired:
		return "This link has expired. Ask for a new one."
	case problem.CodeValidation:
		return "Please check the fields: a password needs at least 8 characters."
	case problem.CodeEmailTaken:
		return "Another account has this email address."
	case problem.CodeAccountExists:
		return "An account already has this address: enter its password to accept."
	// The right password of an account with a second factor: the form,
	// which carries no sign-in, cannot accept for it.
	case problem.CodeInsufficientUserAuthentication:
		return "This account has a second factor, so its password alone does not accept the invitation. Sign in with your password and your second factor, then accept the invitation signed in, from the app."
	case problem.CodeInvalidGrant:
		return "The password is wrong."
	case problem.CodeInvitationNotActive:
		return "This invitation was withdrawn or already used."
	case problem.CodeInvitationMismatch:
		return "This invitation was sent to another address."
	case problem.CodeAlreadyMember:
		return "You are already a member."
	case problem.CodeTooManyRequests:
		return "Too many attempts. Wait a little and try again."
	case problem.CodeForbidden:
		return "This invitation can no longer be accepted."
	// The accept form's other refusals: a role the invitation grants
	// deleted since (the only conflict a page's form answers), and an
	// account whose password a tenant admin chose.
	case problem.CodeConflict:
		return "A role this invitation grants was deleted since it was sent. Ask for a new invitation."
	case problem.CodeAdminPasswordBeforeLinking:
		return "This account's password was set by a tenant administrator. Reset it (forgot password), then accept."
	case problem.CodeUserDisabled:
		return "This account is disabled."
	case problem.CodeBadRequest:
		return "The form could not be read."
	case problem.CodeUnsupportedMedia:
		return "The form could not be read."
	case problem.CodeAlreadyVerified:
		return "The address is already verified."
	case problem.CodeInternal:
		return "Something went wrong. Try again later."
	case problem.CodeUnavailable:
		return "Something went wrong. Try again later."

	// Verification: the link needs proof of holding the account.
	case problem.CodeAccountProofRequired:
		return "Enter the account's password to confirm the address. An account without a password (one you sign in to through another service) confirms it from the app, signed in."
	case problem.CodeLinkAccountMismatch:
		return "This link was sent for another account than the one signed in."
	case problem.CodeInvalidToken:
		return "Your session has ended. Sign in again."
	}
	return ""
}

// actionForgot is the forgot form's action: /reset-password without a
// token.
const actionForgot = "/api/v1/auth/password/forgot"

// render writes p, with the link's token, its outcome (done) and the
// error of its last post from the query; an Error p already holds (the
// page's own finding) is shown instead of the query's.
func render(c *fiber.Ctx, p page) error {
	// The forgot form (also an expired reset link's) takes no token.
	if !p.NoForm && p.Action != actionForgot {
		p.Token = c.Query("token")
	}
	if len(p.Token) > onetime.MaxLen {
		p.Token = ""
	}
	p.Done = c.Query("done") == "1"
	// Only the forgot form says a link is on its way: another page does
	// not take sent=1 from a link of anyone's making.
	p.Sent = p.Action == actionForgot && c.Query("token") == "" && c.Query("sent") == "1"
	if code := c.Query("error"); code != "" && p.Error == "" {
		p.Error = errorText(code)
		switch {
		case p.Error != "":
		case problem.Known(code):
			p.Error = "Something went wrong (" + code + ")."
		default:
			// Not a code the API answers, however code-shaped
			// (your_account_is_locked_call_us): the page does not show a
			// link's words of anyone's choosing as its own.
			p.Error = "Something went wrong."
		}
	}
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, p); err != nil {
		return err
	}
	// The token is in the URL: keep it out of Referer headers and caches
	// (PrivateHeaders); no script may run, forms may only post back here,
	// and no other site may frame the page (X-Frame-Options for browsers
	// without CSP level 2's frame-ancestors).
	httpapi.PrivateHeaders(c)
	c.Set(fiber.HeaderXFrameOptions, "DENY")
	c.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	return c.Send(buf.Bytes())
}

// linkAddress looks up the link's token of purpose p as the API will
// (onetime.Check), for its page to say whose link it is: the address it
// was mailed to, masked (audit.MaskEmail: the page is open to whoever
// holds the link, which may have been forwarded or logged), and whether it
// expired. known is false for a token that is no such link, whose page
// names nothing, as before any lookup.
func (s *Service) linkAddress(ctx context.Context, p onetime.Purpose, raw string) (shown string, expired, known bool, err error) {
	t, err := onetime.Check(ctx, s.pool, p, raw)
	switch {
	case errors.Is(err, onetime.ErrInvalid):
		return "", false, false, nil
	case errors.Is(err, onetime.ErrExpired):
		return mail.ShownName(audit.MaskEmail(t.Email)), true, true, nil
	case err != nil:
		return "", false, false, err
	}
	return mail.ShownName(audit.MaskEmail(t.Email)), false, true, nil
}

func (s *Service) pageVerifyEmail(c *fiber.Ctx) error {
	p := page{Title: "Confirm your email address", Action: "/api/v1/auth/verify-email",
		Intro: "Enter the password of the account to confirm that the address is yours. " +
			"Whoever creates an account chooses its password: if you did not create this one, do not confirm it; " +
			"take the address back with a password reset (“Forgot password”) instead. " +
			"An account you sign in to through another service confirms its address from the app, signed in; " +
			"one an administrator added without a password needs none here.",
		Fields: []field{{Name: "password", Label: "Password of the account", Type: "password", Autocomplete: "current-password"}},
		Submit: "Confirm", Message: "Your email address is confirmed. You can close this page."}
	if p.Done = c.Query("done") == "1"; p.Done {
		return render(c, p)
	}
	shown, expired, known, err := s.linkAddress(c.UserContext(), onetime.VerifyEmail, c.Query("token"))
	if err != nil {
		return err
	}
	switch {
	case expired:
		p.Error, p.NoForm = "This link to confirm "+shown+" has expired. Sign in to the app and ask for a new one "+
			"(send the confirmation mail again, or, for a new address, change it again).", true
	case known:
		p.Intro = "This link confirms " + shown + ". " + p.Intro
	}
	return render(c, p)
}

func (s *Service) pageResetPassword(c *fiber.Ctx) error {
	p := page{Title: "Reset your password", Action: "/api/v1/auth/password/reset", Submit: "Set the new password",
		Message: "Your password is changed and every session was signed out. Sign in with the new password.",
		Fields:  []field{{Name: "new_password", Label: "New password", Type: "password", Autocomplete: "new-password", Required: true}}}
	forgot := []field{{Name: "email", Label: "Email address", Type: "email", Autocomplete: "email", Required: true}}
	tok := c.Query("token")
	if tok == "" {
		// No token: ask for the address to mail a link to.
		p.Action, p.Submit, p.Fields = actionForgot, "Mail me a link", forgot
		return render(c, p)
	}
	if c.Query("done") == "1" {
		return render(c, p)
	}
	shown, expired, known, err := s.linkAddress(c.UserContext(), onetime.PasswordReset, tok)
	if err != nil {
		return err
	}
	switch {
	case expired:
		// The way to a new link: the forgot form.
		p.Action, p.Submit, p.Fields = actionForgot, "Mail me a new link", forgot
		p.Error = "This link to reset the password of " + shown + " has expired. Enter the address to get a new one."
	case known:
		p.Intro = "Choose a new password for " + shown + "."
	}
	return render(c, p)
}

// pageAcceptInvitation shows what the link's invitation is (the tenant,
// who sent it, the address it was sent to) and a form for what accepting
// it takes: an existing account's password, or a new account's. A link
// that cannot be accepted (unknown, withdrawn, used, expired, its tenant
// suspended, its sender no longer one who may send it, a role of it
// deleted since) shows the accept's refusal, as the page after a refused post
// does, and no form. It reads the invitation as the accept does
// (invitations.Preview, usable), without locking or writing anything, and
// tells whoever holds the link nothing the accept would not: the address
// and names are its mail's, and whether an account has the address is
// what an accept without a password answers (account_exists or
// validation_failed). Nothing is rate limited here, as the accept limits
// only the passwords it checks or hashes, which the page does not.
func (s *Service) pageAcceptInvitation(c *fiber.Ctx) error {
	p := page{Title: "Accept the invitation", Action: "/api/v1/invitations/accept", Submit: "Accept",
		Message: "You joined. Sign in to start."}
	if c.Query("done") == "1" {
		return render(c, p)
	}
	ctx := c.UserContext()
	tok := c.Query("token")
	if tok == "" && c.Query("error") != "" {
		// A refused post that dropped the link (link_invalid,
		// link_expired, a form without a token): its error, no form.
		p.NoForm = true
		return render(c, p)
	}
	v, err := s.invitations.Preview(ctx, tok)
	if err == nil {
		err = usable(v.Pending)
	}
	if err != nil {
		code := refusalCode(err)
		if code == "" {
			return err
		}
		p.Error, p.NoForm = errorText(code), true
		if code == problem.CodeLinkExpired {
			p.Error = expiredInvitation(v)
		}
		return render(c, p)
	}
	exists, err := s.hasAccount(ctx, v.Email)
	if err != nil {
		return err
	}
	email := mail.ShownName(v.Email)
	p.Invitation = &invitationView{TenantName: mail.ShownName(v.TenantName), InviterName: mail.ShownName(v.InviterName), Email: email}
	// The address, read-only, for password managers to pair with the
	// password (posted with the form, and ignored: the invitation names
	// the address).
	username := field{Name: "username", Label: "Email address", Type: "email", Autocomplete: "username", Value: email, ReadOnly: true}
	if exists {
		// Not "enter its password": an account with a second factor
		// cannot accept with it alone (the error after such a post).
		p.Intro = "An account has this address: accept with its password. " +
			"An account with a second factor, or one you sign in to through another service, accepts the invitation from the app, signed in."
		p.Fields = []field{username,
			{Name: "password", Label: "Password of your account", Type: "password", Autocomplete: "current-password", Required: true}}
		return render(c, p)
	}
	p.Intro = "No account has this address yet: choose a password to create one and join."
	p.Fields = []field{username,
		{Name: "password", Label: "New password (at least 8 characters)", Type: "password", Autocomplete: "new-password", Required: true},
		{Name: "display_name", Label: "Your name", Type: "text", Autocomplete: "name"}}
	return render(c, p)
}

// expiredInvitation says whose invitation an expired link was, with the
// tenant and address its page shows while it is pending, and who can send
// a new one.
func expiredInvitation(v invitations.Preview) string {
	who := "whoever invited you"
	if n := mail.ShownName(v.InviterName); n != "" {
		who = n
	}
	return "This invitation to join " + mail.ShownName(v.TenantName) + " as " + mail.ShownName(v.Email) +
		" has expired. Ask " + who + " to send it again."
}
