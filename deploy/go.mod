module github.com/tollgate-auth/tollgate/deploy

go 1.26.0

require github.com/tollgate-auth/tollgate/shared v0.0.0

replace github.com/tollgate-auth/tollgate/shared => ../shared
