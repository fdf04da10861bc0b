package auth

// SetBeforeRefreshIssue sets the hook the refresh grant runs between the
// rotation and the signing (nil: none), for the tests of package auth_test.
func SetBeforeRefreshIssue(f func(sessionID string)) { beforeRefreshIssue = f }
