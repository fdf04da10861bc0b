package httpapi

import (
	"errors"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
	"github.com/tollgate-auth/tollgate/coreapi/internal/projection"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// internalRoutes serves the proxies: the projection they fetch on a cache
// miss, at identity.ProjectionPath (Internal is mounted at InternalPrefix).
func (s *Server) internalRoutes(rt Routes) {
	rt.Internal.Get(strings.TrimPrefix(identity.ProjectionPath, InternalPrefix)+"/:user_id", s.getProjection)
}

func (s *Server) getProjection(c *fiber.Ctx) error {
	uid, err := PathUUID(c, "user_id")
	if err != nil {
		return err
	}
	// Once: c.Query would serve the first of two, where another reader of
	// the URL may take the last.
	var tid string
	if err := ReadQuery(c.Context().QueryArgs(), []FormField{{Name: "tenant_id", Dst: &tid}}); err != nil {
		return err
	}
	if !ids.Valid(tid) {
		return problem.New(fiber.StatusBadRequest, problem.CodeInvalidID, "tenant_id must be a UUID")
	}
	if !s.projLimit.acquire(c.UserContext()) {
		s.metrics.shed("projection")
		c.Set(fiber.HeaderRetryAfter, "1")
		return problem.New(fiber.StatusServiceUnavailable, problem.CodeUnavailable, "too many projection fetches in flight; retry shortly")
	}
	defer s.projLimit.release()
	p, err := s.projector.Get(c.UserContext(), uid, strings.ToLower(tid))
	if errors.Is(err, projection.ErrNotFound) {
		// A code of its own: the proxy remembers "no membership" only on
		// it, not on any 404 (no such route, another service).
		return problem.New(fiber.StatusNotFound, problem.CodeNoMembership, err.Error())
	}
	if err != nil {
		return err
	}
	if p.Roles == nil {
		p.Roles = []string{}
	}
	if p.Permissions == nil {
		p.Permissions = []string{}
	}
	if p.RevokedSessions == nil {
		p.RevokedSessions = []string{}
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(p)
}
