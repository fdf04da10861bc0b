# syntax=docker/dockerfile:1.7
# coreapi: static, non-root, distroless. Build from the repository root:
#   docker build -f deploy/docker/coreapi.Dockerfile -t tollgate/coreapi .
# The same image runs `coreapi serve` (default), `coreapi migrate up` (the
# pod's init container), `coreapi keys generate` and `coreapi tenants`.

ARG GO_VERSION=1.26
# What the image is built from: the --version output, the build_info gauge
# and the OCI labels. Release builds pass both, e.g.
#   --build-arg VERSION=$(git describe --tags --always --dirty) --build-arg REVISION=$(git rev-parse HEAD)
ARG VERSION=dev
ARG REVISION=unknown

# unpinned: by tag until scripts/pin-images.sh runs with registry access (docs/operations.md, "Versions and images")
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION
ARG REVISION
WORKDIR /src
ENV CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false

# The workspace needs every module's go.mod, not its sources. The build
# downloads the modules the binary is built from, and only those, into the
# cache mount (a `go mod download` here would fetch the module's whole
# graph: test dependencies, and for the example app the deploy module's
# Kubernetes client).
COPY go.work go.work.sum ./
COPY shared/go.mod shared/
COPY migrations/go.mod migrations/go.sum migrations/
COPY coreapi/go.mod coreapi/go.sum coreapi/
COPY authproxy/go.mod authproxy/go.sum authproxy/
COPY deploy/go.mod deploy/go.sum deploy/

COPY shared/ shared/
COPY migrations/ migrations/
COPY coreapi/ coreapi/
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w -X github.com/tollgate-auth/tollgate/shared/buildinfo.version=${VERSION} -X github.com/tollgate-auth/tollgate/shared/buildinfo.revision=${REVISION}" -o /out/coreapi ./coreapi/cmd/coreapi

# unpinned: by tag until scripts/pin-images.sh runs with registry access (docs/operations.md, "Versions and images")
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.title="coreapi" \
      org.opencontainers.image.description="Tollgate coreapi: tenants, users, roles, sign-in and the projection endpoint, behind authproxy" \
      org.opencontainers.image.source="https://github.com/tollgate-auth/tollgate" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/coreapi /coreapi
USER 65532:65532
ENTRYPOINT ["/coreapi"]
CMD ["serve"]
