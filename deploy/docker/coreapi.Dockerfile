# syntax=docker/dockerfile:1.7
# coreapi: static, non-root, distroless. Build from the repository root:
#   docker build -f deploy/docker/coreapi.Dockerfile -t tollgate/coreapi .
# The same image runs `coreapi serve` (default), `coreapi migrate up` (the
# pod's init container), `coreapi keys generate` and `coreapi tenants`.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
ENV CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false

# Module files first, so the download layer survives source edits. The
# workspace needs every module's go.mod, not its sources.
COPY go.work go.work.sum ./
COPY shared/go.mod shared/
COPY migrations/go.mod migrations/go.sum migrations/
COPY coreapi/go.mod coreapi/go.sum coreapi/
COPY authproxy/go.mod authproxy/go.sum authproxy/
COPY deploy/go.mod deploy/go.sum deploy/
RUN --mount=type=cache,target=/go/pkg/mod \
    cd coreapi && go mod download

COPY shared/ shared/
COPY migrations/ migrations/
COPY coreapi/ coreapi/
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/coreapi ./coreapi/cmd/coreapi

# Pin by digest in production (docker buildx imagetools inspect ...).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/coreapi /coreapi
USER 65532:65532
ENTRYPOINT ["/coreapi"]
CMD ["serve"]
