module github.com/tollgate-auth/tollgate/shared

go 1.26.0
