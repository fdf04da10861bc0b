// Package k8s holds the Kubernetes manifests of Tollgate (a kustomize base
// under base/, and overlays/app-sidecar, an example of authproxy as a native
// sidecar of your own service) and, in its tests, the invariants they must
// keep: coreapi is never reachable from outside its pod except, in the
// sidecar overlay, its API port from pods that run authproxy; the Services
// and the NetworkPolicies admit the proxy ports only; an app listens on
// loopback behind its sidecar and never holds the core key; probes hit the
// admin ports; no secret sits in a ConfigMap; every container runs with a
// fixed non-root uid and gid on a read-only filesystem; and the replicas
// spread over nodes behind a PodDisruptionBudget that lets a drain evict
// one at a time, unready ones included.
package k8s
