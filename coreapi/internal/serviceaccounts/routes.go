package serviceaccounts

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oautherr"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// Register adds the routes (an httpapi.Options.Register hook). Service
// accounts are members: reading them needs users:read, changing them
// users:write.
func (s *Service) Register(rt httpapi.Routes) {
	s.cursors = rt.Cursors
	rt.CloseAtShutdown(&s.refusalLogs)
	rt.Root.Get(MetadataPath, s.serveMetadata)
	rt.Root.Get(OIDCMetadataPath, s.serveMetadata)
	rt.Public.Post("/auth/introspect", oautherr.Wrap(s.introspect))
	rt.Public.Post("/auth/revoke", oautherr.Wrap(s.revoke))
	read, write := httpapi.RequirePermission(permissions.UsersRead), httpapi.RequirePermission(permissions.UsersWrite)
	rt.Protected.Get("/service-accounts", read, s.list)
	rt.Protected.Post("/service-accounts", write, humansOnly, s.create)
	rt.Protected.Delete("/service-accounts/:id", write, humansOnly, s.delete)
	rt.Protected.Post("/service-accounts/:id/secrets", write, humansOnly, s.createSecret)
	rt.Protected.Delete("/service-accounts/:id/secrets/:secret_id", write, humansOnly, s.deleteSecret)
}

var _ auth.ClientCredentials = (*Service)(nil)

// humansOnly refuses service accounts: a service account that could make
// service accounts or secrets would outlive its own deletion through them.
func humansOnly(c *fiber.Ctx) error {
	if httpapi.IdentityOf(c).Principal == identity.PrincipalService {
		return problem.New(fiber.StatusForbidden, problem.CodeForbidden, "service accounts cannot manage service accounts or their secrets")
	}
	return c.Next()
}

// ErrorProblem maps the store's errors to problems (an
// httpapi.Options.ErrorMappers entry).
func ErrorProblem(err error) *problem.Problem {
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrSecretNotFound):
		return problem.New(fiber.StatusNotFound, problem.CodeNotFound, err.Error())
	case errors.Is(err, ErrOwnerRole), errors.Is(err, ErrUnknownRole):
		p := problem.New(fiber.StatusUnprocessableEntity, problem.CodeValidation, "the request has invalid fields")
		p.Errors = []problem.FieldError{{Field: "roles", Message: err.Error()}}
		return p
	case errors.Is(err, ErrMachineActor):
		return problem.New(fiber.StatusForbidden, problem.CodeForbidden, err.Error())
	case errors.Is(err, ErrTooManySecrets), errors.Is(err, ErrTooManyAccounts):
		return problem.New(fiber.StatusConflict, problem.CodeConflict, err.Error())
	}
	return nil
}

// list answers a page of the tenant's service accounts; the list has no
// total.
func (s *Service) list(c *fiber.Ctx) error {
	pq, err := httpapi.ParsePageWithoutTotal(c)
	if err != nil {
		return err
	}
	tid := httpapi.IdentityOf(c).TenantID
	var after *Cursor
	if pq.Cursor != "" {
		t, id, err := s.cursors.DecodeAfter("service-accounts", tid, pq.Cursor)
		if err != nil {
			return err
		}
		after = &Cursor{CreatedAt: t, ID: id}
	}
	out, err := s.store.List(c.UserContext(), tid, pq.Limit+1, after)
	if err != nil {
		return err
	}
	return c.JSON(httpapi.Page(out, 0, pq, func(a Account) string {
		return s.cursors.After("service-accounts", tid, a.CreatedAt, a.ID)
	}))
}

type createRequest struct {
	Name  string   `json:"name"`
	Roles []string `json:"roles"`
}

func (s *Service) create(c *fiber.Ctx) error {
	var req createRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	req.Name = strings.TrimSpace(req.Name)
	var errs []problem.FieldError
	if n := utf8.RuneCountInString(req.Name); n < 1 || n > 200 {
		errs = append(errs, problem.FieldError{Field: "name", Message: "1 to 200 characters"})
	} else if r, ok := httpapi.PlainText(req.Name); !ok {
		errs = append(errs, problem.FieldError{Field: "name", Message: fmt.Sprintf("no control characters or bidirectional overrides (%U)", r)})
	} else if !httpapi.Visible(req.Name) {
		errs = append(errs, problem.FieldError{Field: "name", Message: httpapi.NotVisible})
	}
	if len(req.Roles) > 50 {
		errs = append(errs, problem.FieldError{Field: "roles", Message: "at most 50 roles"})
	}
	for _, r := range req.Roles {
		if !roles.ValidName(r) {
			errs = append(errs, problem.FieldError{Field: "roles", Message: "not a role name: " + quote(r)})
			break
		}
	}
	if len(errs) > 0 {
		p := problem.New(fiber.StatusUnprocessableEntity, problem.CodeValidation, "the request has invalid fields")
		p.Errors = errs
		return p
	}
	acc, err := s.store.Create(c.UserContext(), httpapi.IdentityOf(c).TenantID, httpapi.ActorOf(c), req.Name, req.Roles)
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusCreated).JSON(acc)
}

func pathID(c *fiber.Ctx, name string) (string, error) {
	id, ok := ids.Parse(c.Params(name))
	if !ok {
		return "", problem.New(fiber.StatusBadRequest, problem.CodeInvalidID, name+" must be a UUID")
	}
	return id, nil
}

func (s *Service) delete(c *fiber.Ctx) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	if err := s.store.Delete(c.UserContext(), httpapi.IdentityOf(c).TenantID, id, httpapi.ActorOf(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Service) createSecret(c *fiber.Ctx) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	ns, err := s.store.CreateSecret(c.UserContext(), httpapi.IdentityOf(c).TenantID, id, httpapi.ActorOf(c))
	if errors.Is(err, sessions.ErrEnded) {
		return httpapi.SessionEnded(c)
	}
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Status(fiber.StatusCreated).JSON(ns)
}

func (s *Service) deleteSecret(c *fiber.Ctx) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	sid, err := pathID(c, "secret_id")
	if err != nil {
		return err
	}
	if err := s.store.DeleteSecret(c.UserContext(), httpapi.IdentityOf(c).TenantID, id, sid, httpapi.ActorOf(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}
