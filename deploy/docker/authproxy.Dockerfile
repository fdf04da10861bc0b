# syntax=docker/dockerfile:1.7
# authproxy: static, non-root, distroless. Build from the repository root:
#   docker build -f deploy/docker/authproxy.Dockerfile -t tollgate/authproxy .

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
    cd authproxy && go mod download

COPY shared/ shared/
COPY authproxy/ authproxy/
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/authproxy ./authproxy/cmd/authproxy

# Pin by digest in production (docker buildx imagetools inspect ...).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/authproxy /authproxy
USER 65532:65532
# 8080: the proxied API (the only port behind the Service); 9090: admin.
EXPOSE 8080 9090
ENTRYPOINT ["/authproxy"]
