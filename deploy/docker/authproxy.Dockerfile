# syntax=docker/dockerfile:1.7
# authproxy: static, non-root, distroless. Build from the repository root:
#   docker build -f deploy/docker/authproxy.Dockerfile -t tollgate/authproxy .

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
COPY authproxy/ authproxy/
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w -X github.com/tollgate-auth/tollgate/shared/buildinfo.version=${VERSION} -X github.com/tollgate-auth/tollgate/shared/buildinfo.revision=${REVISION}" -o /out/authproxy ./authproxy/cmd/authproxy

# unpinned: by tag until scripts/pin-images.sh runs with registry access (docs/operations.md, "Versions and images")
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.title="authproxy" \
      org.opencontainers.image.description="Tollgate authproxy: the edge sidecar that verifies tokens and signs identity headers" \
      org.opencontainers.image.source="https://github.com/tollgate-auth/tollgate" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/authproxy /authproxy
USER 65532:65532
# 8080: the proxied API (the only port behind the Service); 9090: admin.
# The binary binds loopback unless told otherwise; in the image the
# container's own interfaces are the boundary, so both listen on them
# (`docker run -p 8080:8080` works; the manifests set the same).
ENV PROXY_LISTEN_ADDR=:8080 PROXY_ADMIN_ADDR=:9090
EXPOSE 8080 9090
ENTRYPOINT ["/authproxy"]
