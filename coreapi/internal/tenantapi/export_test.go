package tenantapi

// The response types, for the external tests that decode answers.
type (
	Member     = member
	Me         = me
	Role       = role
	Membership = membership
	AuditEvent = auditEvent
)
