// Package clients checks that coreapi's public OpenAPI document
// (coreapi/internal/openapi/openapi.json) generates working clients: its
// test generates a Go client with oapi-codegen and builds it, and
// TypeScript types with openapi-typescript and type-checks them with
// `tsc --strict`. The generator versions are pinned here (Go) and in
// typescript/package.json and its lockfile (npm); nothing of this is
// needed to build or run the services.
package clients
