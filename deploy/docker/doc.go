// Package docker holds the Dockerfiles of the two services. Its test checks
// what an image build would do without a Docker engine: it parses each
// Dockerfile, asserts the image is static, non-root and minimal, and replays
// the build stage (its COPY instructions filtered through .dockerignore, its
// RUN commands) in a scratch directory.
package docker
