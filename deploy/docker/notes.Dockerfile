# syntax=docker/dockerfile:1.7
# The example notes service (deploy/examples/notes), the app container of
# deploy/k8s/overlays/app-sidecar: static, non-root, distroless. Build from
# the repository root:
#   docker build -f deploy/docker/notes.Dockerfile -t registry.example.com/notes:0.1.0 .

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
COPY shared/go.mod shared/go.sum shared/
COPY migrations/go.mod migrations/go.sum migrations/
COPY coreapi/go.mod coreapi/go.sum coreapi/
COPY authproxy/go.mod authproxy/go.sum authproxy/
COPY deploy/go.mod deploy/go.sum deploy/

COPY shared/ shared/
COPY deploy/examples/notes/ deploy/examples/notes/
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w -X github.com/tollgate-auth/tollgate/shared/buildinfo.version=${VERSION} -X github.com/tollgate-auth/tollgate/shared/buildinfo.revision=${REVISION}" -o /out/notes ./deploy/examples/notes/cmd/notes

# unpinned: by tag until scripts/pin-images.sh runs with registry access (docs/operations.md, "Versions and images")
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.title="notes" \
      org.opencontainers.image.description="Tollgate example notes service, an upstream behind the authproxy sidecar" \
      org.opencontainers.image.source="https://github.com/tollgate-auth/tollgate" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/notes /notes
USER 65532:65532
# 8082: the API, bound to loopback behind the authproxy sidecar; 9092: admin.
EXPOSE 8082 9092
ENTRYPOINT ["/notes"]
