// Package k8s holds the Kubernetes manifests of Tollgate (a kustomize base
// under base/) and, in its tests, the invariants they must keep: coreapi is
// never reachable from outside its pod, the Service and the NetworkPolicy
// admit the proxy port only, probes hit the admin ports, no secret sits in a
// ConfigMap, and every container runs non-root on a read-only filesystem.
package k8s
