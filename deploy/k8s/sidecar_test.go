package k8s

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	kustypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-auth/tollgate/shared/identity"
)

// The app-sidecar overlay: the base plus an app whose pod runs authproxy as
// a native sidecar, and coreapi's API port opened to such pods only.
const (
	sidecarDir = "overlays/app-sidecar"
	// sidecarLabel marks pods that run authproxy; only they reach coreapi.
	sidecarLabel = "tollgate.io/authproxy"
)

// Variables of the identity-v2 contract (CONTRACT: keys and configuration)
// that the proxy's route table reads; accepted on the sidecar until its
// configuration loader lists them, after which reads() finds them there.
var contractProxyVars = []string{"IDENTITY_URL", "IDENTITY_KEYS", "IDENTITY_KEYS_FILE", "UPSTREAM_KEYS", "UPSTREAM_KEYS_FILE"}

func renderSidecar(t *testing.T) *bundle {
	t.Helper()
	b, err := render(filesys.MakeFsOnDisk(), sidecarDir)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSidecarOverlayDecodesStrictly decodes every manifest of the overlay
// with the k8s.io/api types (unknown fields are errors), checks that the
// kustomization lists exactly those files, and that its rules file and
// permission catalog are the example app's.
func TestSidecarOverlayDecodesStrictly(t *testing.T) {
	entries, err := os.ReadDir(sidecarDir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		if e.IsDir() || filepath.Ext(e.Name()) != ".yaml" || slices.Contains(overlayCopies, e.Name()) || e.Name() == "kustomization.yaml" {
			continue
		}
		files = append(files, e.Name())
		t.Run(e.Name(), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(sidecarDir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			docs := splitDocs(data)
			if len(docs) == 0 {
				t.Fatal("no documents")
			}
			var b bundle
			for i, d := range docs {
				if err := b.add(d); err != nil {
					t.Errorf("document %d: %v", i, err)
				}
			}
		})
	}
	data, err := os.ReadFile(filepath.Join(sidecarDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustypes.Kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	var listed []string
	for _, r := range k.Resources {
		if !strings.HasPrefix(r, "../") {
			listed = append(listed, r)
		}
	}
	for _, p := range k.Patches {
		listed = append(listed, p.Path)
	}
	slices.Sort(listed)
	if !slices.Equal(listed, files) {
		t.Errorf("kustomization resources and patches = %v, want every manifest file %v", listed, files)
	}
	if !slices.Contains(k.Resources, "../../base") {
		t.Errorf("the overlay does not build on ../../base: %v", k.Resources)
	}
	for _, f := range overlayCopies {
		ours, err := os.ReadFile(filepath.Join(sidecarDir, f))
		if err != nil {
			t.Fatal(err)
		}
		example, err := os.ReadFile(filepath.Join("..", "examples", "notes", f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ours, example) {
			t.Errorf("overlays/app-sidecar/%s differs from deploy/examples/notes/%[1]s (kustomize cannot read outside the overlay: keep the copy identical)", f)
		}
	}
}

// overlayCopies are the example app's files the overlay keeps a copy of
// (configMapGenerator inputs, not manifests).
var overlayCopies = []string{"rules.yaml", "permissions.yaml"}

func TestSidecarOverlayInvariants(t *testing.T) {
	b := renderSidecar(t)
	for _, v := range checkSidecar(b) {
		t.Error(v)
	}
}

// TestSidecarRoutesMayRequireBuiltins: a route may require one of coreapi's
// built-in permissions, which no catalog declares.
func TestSidecarRoutesMayRequireBuiltins(t *testing.T) {
	b := renderSidecar(t)
	for _, cm := range b.ConfigMaps {
		if strings.HasPrefix(cm.Name, "notes-rules") {
			cm.Data["rules.yaml"] = strings.Replace(cm.Data["rules.yaml"], "[notes:write]", "[notes:write, users:read]", 1)
		}
	}
	if v := checkSidecar(b); len(v) != 0 {
		t.Errorf("a route requiring the built-in users:read: %q, want no violation", v)
	}
}

// TestSidecarPlaceholderSecret keeps the app's key out of git: the
// committed value is a placeholder the key parser rejects.
func TestSidecarPlaceholderSecret(t *testing.T) {
	b := renderSidecar(t)
	found := false
	for _, s := range b.Secrets {
		if !strings.HasPrefix(s.Name, "notes-identity-keys") {
			continue
		}
		found = true
		for k, v := range s.Data {
			if !strings.Contains(string(v), placeholder) {
				t.Errorf("Secret %s key %s: not a %s placeholder", s.Name, k, placeholder)
			}
			if _, err := identity.ParseKeys(string(v)); err == nil {
				t.Errorf("Secret %s key %s: placeholder parses as a key list", s.Name, k)
			}
		}
	}
	if !found {
		t.Fatal("no notes-identity-keys Secret rendered")
	}
}

// TestSidecarSetsOnlyKnownVariables: every variable set on the sidecar is
// one authproxy reads (or one of the contract's new ones).
func TestSidecarSetsOnlyKnownVariables(t *testing.T) {
	vars := serviceVars(t)
	b := renderSidecar(t)
	unknown := func(b *bundle) []string {
		var out []string
		for _, d := range b.Deployments {
			for _, c := range d.Spec.Template.Spec.InitContainers {
				if serviceOf(&c) != "authproxy" {
					continue
				}
				for _, e := range c.Env {
					if !reads(vars, "authproxy", e.Name) && !slices.Contains(contractProxyVars, e.Name) {
						out = append(out, fmt.Sprintf("%s sidecar %s: %s is not read by authproxy", d.Name, c.Name, e.Name))
					}
				}
			}
		}
		return out
	}
	for _, v := range unknown(b) {
		t.Error(v)
	}
	c := b.deepCopy()
	pod := &appDeployment(t, c).Spec.Template.Spec
	pod.InitContainers[0].Env = append(pod.InitContainers[0].Env, corev1.EnvVar{Name: "IDENTITY_URI", Value: "http://x"})
	if got := unknown(c); len(got) != 1 || !strings.Contains(got[0], "IDENTITY_URI") {
		t.Fatalf("a misspelt variable: %q, want one violation about IDENTITY_URI", got)
	}
}

func appDeployment(t *testing.T, b *bundle) *appsv1.Deployment {
	t.Helper()
	for _, d := range b.Deployments {
		if d.Name == "notes" {
			return d
		}
	}
	t.Fatal("no Deployment notes")
	return nil
}

func sidecarOf(t *testing.T, b *bundle) *corev1.Container {
	t.Helper()
	return &appDeployment(t, b).Spec.Template.Spec.InitContainers[0]
}

func appCtr(t *testing.T, b *bundle) *corev1.Container {
	t.Helper()
	return &appDeployment(t, b).Spec.Template.Spec.Containers[0]
}

func findPolicy(t *testing.T, b *bundle, name string) *networkingv1.NetworkPolicy {
	t.Helper()
	for _, np := range b.NetworkPolicies {
		if np.Name == name {
			return np
		}
	}
	t.Fatalf("no NetworkPolicy %s", name)
	return nil
}

func findService(t *testing.T, b *bundle, name string) *corev1.Service {
	t.Helper()
	for _, s := range b.Services {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no Service %s", name)
	return nil
}

// TestSidecarInvariantsCatchBreakage proves each sidecar check fails on a
// deliberately broken copy of the rendered overlay.
func TestSidecarInvariantsCatchBreakage(t *testing.T) {
	base := renderSidecar(t)
	if v := checkSidecar(base); len(v) != 0 {
		t.Fatalf("overlay is not clean: %v", v)
	}
	tests := []struct {
		name   string
		mutate func(t *testing.T, b *bundle)
		want   string
	}{
		{"sidecar as an ordinary init container", func(t *testing.T, b *bundle) {
			sidecarOf(t, b).RestartPolicy = nil
		}, "restartPolicy"},
		{"sidecar without a startup probe", func(t *testing.T, b *bundle) {
			sidecarOf(t, b).StartupProbe = nil
		}, "startup probe"},
		{"sidecar startup probe on /readyz", func(t *testing.T, b *bundle) {
			sidecarOf(t, b).StartupProbe.HTTPGet.Path = "/readyz"
		}, "not /healthz"},
		{"sidecar liveness probe on /readyz", func(t *testing.T, b *bundle) {
			sidecarOf(t, b).LivenessProbe.HTTPGet.Path = "/readyz"
		}, "sidecar authproxy: liveness probe on /readyz, not /healthz"},
		{"sidecar's upstream keys from a Secret in the environment", func(t *testing.T, b *bundle) {
			c := sidecarOf(t, b)
			c.Env = append(c.Env, corev1.EnvVar{Name: "UPSTREAM_KEYS", ValueFrom: &corev1.EnvVarSource{
				SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "notes-identity-keys"}, Key: "keys"}}})
		}, "container authproxy: UPSTREAM_KEYS from Secret notes-identity-keys in the environment; mount the Secret and set UPSTREAM_KEYS_FILE"},
		{"sidecar's parallelism left to the node", func(t *testing.T, b *bundle) {
			c := sidecarOf(t, b)
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMAXPROCS" })
		}, "neither GOMAXPROCS nor a cpu limit"},
		{"sidecar without a readiness probe", func(t *testing.T, b *bundle) {
			sidecarOf(t, b).ReadinessProbe = nil
		}, "no readiness probe on /readyz"},
		{"proxy as a regular container", func(t *testing.T, b *bundle) {
			pod := &appDeployment(t, b).Spec.Template.Spec
			pod.Containers = append(pod.Containers, pod.InitContainers[0])
			pod.Containers[1].RestartPolicy = nil
		}, "regular container"},
		{"app pod without the authproxy label", func(t *testing.T, b *bundle) {
			delete(appDeployment(t, b).Spec.Template.Labels, sidecarLabel)
		}, "cannot reach coreapi"},
		{"coreapi-internal admits every pod", func(t *testing.T, b *bundle) {
			findPolicy(t, b, "coreapi-internal").Spec.Ingress[0].From[0].PodSelector = &metav1.LabelSelector{}
		}, "not only pods labelled"},
		{"coreapi-internal admits an IP block", func(t *testing.T, b *bundle) {
			np := findPolicy(t, b, "coreapi-internal")
			np.Spec.Ingress[0].From = append(np.Spec.Ingress[0].From, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0"}})
		}, "not only pods labelled"},
		{"coreapi-internal admits from anywhere", func(t *testing.T, b *bundle) {
			findPolicy(t, b, "coreapi-internal").Spec.Ingress[0].From = nil
		}, "not only pods labelled"},
		{"coreapi port also admitted by the base policy", func(t *testing.T, b *bundle) {
			p := intstr.FromInt32(8081)
			np := findPolicy(t, b, "tollgate")
			np.Spec.Ingress[0].Ports = append(np.Spec.Ingress[0].Ports, networkingv1.NetworkPolicyPort{Port: &p})
		}, "not only pods labelled"},
		{"internal Service as a LoadBalancer", func(t *testing.T, b *bundle) {
			findService(t, b, "coreapi-internal").Spec.Type = corev1.ServiceTypeLoadBalancer
		}, "ClusterIP"},
		{"internal Service also targets the admin port", func(t *testing.T, b *bundle) {
			s := findService(t, b, "coreapi-internal")
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "admin", Port: 9091, TargetPort: intstr.FromInt32(9091)})
		}, "targets coreapi"},
		{"coreapi on loopback only", func(t *testing.T, b *bundle) {
			setEnv(ctr(t, b, coreName), "COREAPI_LISTEN_ADDR", "127.0.0.1:8081")
		}, "cannot reach"},
		{"coreapi keeps v1's grace", func(t *testing.T, b *bundle) {
			setEnv(ctr(t, b, coreName), "IDENTITY_ACCEPT_V1", "true")
		}, "IDENTITY_ACCEPT_V1"},
		{"IDENTITY_URL at the public Service", func(t *testing.T, b *bundle) {
			setEnv(sidecarOf(t, b), "IDENTITY_URL", "http://tollgate:80")
		}, "IDENTITY_URL"},
		{"UPSTREAM_URL beside the rules file", func(t *testing.T, b *bundle) {
			setEnv(sidecarOf(t, b), "UPSTREAM_URL", "http://127.0.0.1:8082")
		}, "UPSTREAM_URL"},
		{"rules file not mounted", func(t *testing.T, b *bundle) {
			c := sidecarOf(t, b)
			c.VolumeMounts = slices.DeleteFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "rules" })
		}, "RULES_FILE"},
		{"upstream off loopback", func(t *testing.T, b *bundle) {
			for _, cm := range b.ConfigMaps {
				if strings.HasPrefix(cm.Name, "notes-rules") {
					cm.Data["rules.yaml"] = strings.Replace(cm.Data["rules.yaml"], "http://127.0.0.1:8082", "http://notes-app:8082", 1)
				}
			}
		}, "not loopback"},
		{"app declares the upstream port", func(t *testing.T, b *bundle) {
			c := appCtr(t, b)
			c.Ports = append(c.Ports, corev1.ContainerPort{Name: "api", ContainerPort: 8082})
		}, "declares the upstream port"},
		{"Service targets the app", func(t *testing.T, b *bundle) {
			findService(t, b, "notes").Spec.Ports[0].TargetPort = intstr.FromInt32(8082)
		}, "not the proxy port"},
		{"no Service for the app", func(t *testing.T, b *bundle) {
			findService(t, b, "notes").Spec.Selector = map[string]string{"app": "other"}
		}, "no Service selects"},
		{"no NetworkPolicy for the app", func(t *testing.T, b *bundle) {
			findPolicy(t, b, "notes").Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"app": "other"}}
		}, "no NetworkPolicy"},
		{"app NetworkPolicy admits the upstream port", func(t *testing.T, b *bundle) {
			p := intstr.FromInt32(8082)
			np := findPolicy(t, b, "notes")
			np.Spec.Ingress[0].Ports = append(np.Spec.Ingress[0].Ports, networkingv1.NetworkPolicyPort{Port: &p})
		}, "admits port 8082"},
		{"app NetworkPolicy without policyTypes admits the upstream port", func(t *testing.T, b *bundle) {
			// The API server defaults policyTypes to Ingress: the rule applies.
			np := findPolicy(t, b, "notes").DeepCopy()
			np.Name = "notes-extra"
			np.Spec.PolicyTypes = nil
			p := intstr.FromInt32(8082)
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: &p}}}}
			b.NetworkPolicies = append(b.NetworkPolicies, np)
		}, "NetworkPolicy notes-extra rule 0: admits port 8082"},
		{"app admin port from anywhere", func(t *testing.T, b *bundle) {
			findPolicy(t, b, "notes").Spec.Ingress[1].From = nil
		}, "from anywhere"},
		{"app mounts the core key", func(t *testing.T, b *bundle) {
			c := appCtr(t, b)
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "identity-hmac", MountPath: "/core"})
		}, "core key"},
		{"sidecar holds another core key than coreapi", func(t *testing.T, b *bundle) {
			for i := range appDeployment(t, b).Spec.Template.Spec.Volumes {
				if vol := &appDeployment(t, b).Spec.Template.Spec.Volumes[i]; vol.Name == "identity-hmac" {
					vol.Secret.SecretName = "some-other-key"
				}
			}
		}, "core key"},
		{"app without its key", func(t *testing.T, b *bundle) {
			c := appCtr(t, b)
			c.VolumeMounts = nil
		}, "TOLLGATE_IDENTITY_KEYS_FILE"},
		{"sidecar without the app's key", func(t *testing.T, b *bundle) {
			c := sidecarOf(t, b)
			c.VolumeMounts = slices.DeleteFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "upstream-keys" })
		}, "UPSTREAM_KEYS_FILE"},
		{"sidecar runs as root", func(t *testing.T, b *bundle) {
			sidecarOf(t, b).SecurityContext.RunAsUser = new(int64(0))
		}, "uid 0"},
		{"sidecar readiness on the proxy port", func(t *testing.T, b *bundle) {
			sidecarOf(t, b).ReadinessProbe.HTTPGet.Port = intstr.FromString("http")
		}, "probe"},
		{"app without a preStop pause", func(t *testing.T, b *bundle) {
			appCtr(t, b).Lifecycle = nil
		}, "no preStop pause"},
		{"coreapi without the catalog", func(t *testing.T, b *bundle) {
			c := ctr(t, b, coreName)
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "PERMISSIONS_FILE" })
		}, "requires notes:read, which coreapi's permission catalog does not declare"},
		{"catalog not mounted", func(t *testing.T, b *bundle) {
			c := ctr(t, b, coreName)
			c.VolumeMounts = slices.DeleteFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "permissions" })
		}, "PERMISSIONS_FILE"},
		{"a route requires a permission the catalog lacks", func(t *testing.T, b *bundle) {
			for _, cm := range b.ConfigMaps {
				if strings.HasPrefix(cm.Name, "notes-rules") {
					cm.Data["rules.yaml"] = strings.Replace(cm.Data["rules.yaml"], "[notes:write]", "[notes:delete]", 1)
				}
			}
		}, "requires notes:delete"},
		{"no PDB for the app", func(t *testing.T, b *bundle) {
			b.PDBs = slices.DeleteFunc(b.PDBs, func(p *policyv1.PodDisruptionBudget) bool { return p.Name == "notes" })
		}, "no PodDisruptionBudget selects them"},
		{"the app's PDB blocks every drain", func(t *testing.T, b *bundle) {
			for _, p := range b.PDBs {
				if p.Name == "notes" {
					p.Spec.MaxUnavailable = new(intstr.FromInt32(0))
				}
			}
		}, "PodDisruptionBudget notes: allows no eviction at 2 pods"},
		{"the app's PDB holds back unready pods at one replica", func(t *testing.T, b *bundle) {
			appDeployment(t, b).Spec.Replicas = new(int32(1))
			for _, p := range b.PDBs {
				if p.Name == "notes" {
					p.Spec.UnhealthyPodEvictionPolicy = nil
				}
			}
		}, "PodDisruptionBudget notes: unhealthyPodEvictionPolicy is not AlwaysAllow"},
		{"the app's replicas not spread over nodes", func(t *testing.T, b *bundle) {
			appDeployment(t, b).Spec.Template.Spec.TopologySpreadConstraints = nil
		}, "Deployment notes: no topology spread"},
		{"grace period shorter than the app's pause and the proxy's drain", func(t *testing.T, b *bundle) {
			appDeployment(t, b).Spec.Template.Spec.TerminationGracePeriodSeconds = new(int64(15))
		}, "terminationGracePeriodSeconds"},
		{"grace period without the app's drain and the proxy's NATS close", func(t *testing.T, b *bundle) {
			// The app's pause and the proxy's drain: 20s.
			appDeployment(t, b).Spec.Template.Spec.TerminationGracePeriodSeconds = new(int64(25))
		}, "Deployment notes: terminationGracePeriodSeconds (25s) does not exceed the app's shutdown and then the sidecar's (35s: app container app's preStop pause 5s + its drain 10s; then preStop pause 0s + SHUTDOWN_TIMEOUT 15s + its NATS close 5s"},
		{"grace period left to Kubernetes' default", func(t *testing.T, b *bundle) {
			appDeployment(t, b).Spec.Template.Spec.TerminationGracePeriodSeconds = nil
		}, "Deployment notes: terminationGracePeriodSeconds (30s) does not exceed the app's shutdown and then the sidecar's (35s"},
		{"the app drains longer", func(t *testing.T, b *bundle) {
			setEnv(appCtr(t, b), "SHUTDOWN_TIMEOUT", "20s")
		}, "Deployment notes: terminationGracePeriodSeconds (40s) does not exceed the app's shutdown and then the sidecar's (45s: app container app's preStop pause 5s + its drain 20s"},
		{"the sidecar pauses before its drain", func(t *testing.T, b *bundle) {
			sidecarOf(t, b).Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 10}}}
		}, "then preStop pause 10s + SHUTDOWN_TIMEOUT 15s"},
		{"the sidecar's tracing on", func(t *testing.T, b *bundle) {
			setEnv(sidecarOf(t, b), "OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector:4318")
		}, "(its last usage report beside it) + the last spans' export 5s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := base.deepCopy()
			tt.mutate(t, b)
			got := checkSidecar(b)
			for _, v := range got {
				if strings.Contains(v, tt.want) {
					return
				}
			}
			t.Fatalf("checkSidecar() = %q, want a violation containing %q", got, tt.want)
		})
	}
}

// --- invariants of the sidecar overlay ---

// checkSidecar returns every invariant the overlay breaks. The Tollgate
// Deployment must keep every base invariant once the one sanctioned change
// is taken out (coreapi on the pod IP, behind a ClusterIP Service, admitted
// only from pods labelled as running authproxy); each app Deployment must
// run authproxy as a native sidecar in front of a loopback-bound app.
func checkSidecar(b *bundle) []string {
	var v violations
	var dep *appsv1.Deployment
	for _, d := range b.Deployments {
		if d.Name == deploymentName {
			dep = d
		}
	}
	if dep == nil {
		v.addf("no Deployment %q", deploymentName)
		return v
	}
	corePod := &dep.Spec.Template.Spec
	coreLabels := labels.Set(dep.Spec.Template.Labels)
	var core *corev1.Container
	for i := range corePod.Containers {
		if corePod.Containers[i].Name == coreName {
			core = &corePod.Containers[i]
		}
	}
	if core == nil {
		v.addf("Deployment %s: no container %s", dep.Name, coreName)
		return v
	}
	coreEnv := b.env(&v, core)
	coreHost, corePort := addr(&v, coreEnv, "COREAPI_LISTEN_ADDR")
	if isLoopback(coreHost) {
		v.addf("coreapi: COREAPI_LISTEN_ADDR %s:%d is loopback only: sidecars in other pods cannot reach it", coreHost, corePort)
	}
	// Reachable from app pods, coreapi must refuse what no proxy signed:
	// with v1's grace it serves unsigned requests to its public and
	// optional routes (sign-in, sign-up, the token endpoint) to any
	// container that reaches the port.
	if got := coreEnv["IDENTITY_ACCEPT_V1"]; got != "false" {
		v.addf("coreapi: IDENTITY_ACCEPT_V1 is %q, want \"false\": listening beyond loopback, it would serve unsigned requests from app containers", got)
	}

	// The internal Service: ClusterIP, coreapi's API port and nothing else.
	var internal []*corev1.Service
	for _, s := range b.Services {
		if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(coreLabels) {
			continue
		}
		toCore := false
		for _, sp := range s.Spec.Ports {
			_, num := resolvePort(corePod, targetOf(sp))
			toCore = toCore || num == corePort
		}
		if !toCore {
			continue
		}
		internal = append(internal, s)
		if s.Spec.Type != "" && s.Spec.Type != corev1.ServiceTypeClusterIP || len(s.Spec.ExternalIPs) > 0 {
			v.addf("Service %s: type %s exposes coreapi; it must be ClusterIP", s.Name, s.Spec.Type)
		}
		for _, sp := range s.Spec.Ports {
			if _, num := resolvePort(corePod, targetOf(sp)); num != corePort {
				v.addf("Service %s port %s targets coreapi's port %d beside its API port", s.Name, sp.Name, num)
			}
		}
	}
	if len(internal) != 1 {
		v.addf("%d Services target coreapi's API port %d, want exactly one (the sidecars' IDENTITY_URL)", len(internal), corePort)
	}

	// Every rule admitting coreapi's port admits only labelled pods.
	var admitters []metav1.LabelSelector
	for _, np := range b.NetworkPolicies {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || !sel.Matches(coreLabels) {
			continue
		}
		for i, rule := range np.Spec.Ingress {
			admitsCore := len(rule.Ports) == 0
			for _, p := range rule.Ports {
				if p.Port == nil {
					admitsCore = true
					continue
				}
				_, num := resolvePort(corePod, *p.Port)
				admitsCore = admitsCore || num == corePort || (p.EndPort != nil && num <= corePort && corePort <= *p.EndPort)
			}
			if !admitsCore {
				continue
			}
			if len(rule.From) == 0 {
				v.addf("NetworkPolicy %s rule %d admits coreapi's API port from anywhere, not only pods labelled %s", np.Name, i, sidecarLabel)
			}
			for _, peer := range rule.From {
				if peer.IPBlock != nil || peer.PodSelector == nil || peer.PodSelector.MatchLabels[sidecarLabel] != "true" {
					v.addf("NetworkPolicy %s rule %d admits coreapi's API port to peers not only pods labelled %s=true", np.Name, i, sidecarLabel)
					continue
				}
				admitters = append(admitters, *peer.PodSelector)
			}
			for _, p := range rule.Ports {
				if p.Port != nil {
					if _, num := resolvePort(corePod, *p.Port); num != corePort {
						v.addf("NetworkPolicy %s rule %d admits port %s with coreapi's API port", np.Name, i, p.Port.String())
					}
				}
			}
		}
	}

	// Without the sanctioned exposure, the base invariants hold.
	rest := b.deepCopy()
	rest.Services = slices.DeleteFunc(rest.Services, func(s *corev1.Service) bool {
		return slices.ContainsFunc(internal, func(i *corev1.Service) bool { return i.Name == s.Name })
	})
	for _, np := range rest.NetworkPolicies {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || !sel.Matches(coreLabels) {
			continue
		}
		np.Spec.Ingress = slices.DeleteFunc(np.Spec.Ingress, func(r networkingv1.NetworkPolicyIngressRule) bool {
			return len(r.From) > 0 && !slices.ContainsFunc(r.From, func(p networkingv1.NetworkPolicyPeer) bool {
				return p.IPBlock != nil || p.PodSelector == nil || p.PodSelector.MatchLabels[sidecarLabel] != "true"
			})
		})
	}
	rest.NetworkPolicies = slices.DeleteFunc(rest.NetworkPolicies, func(np *networkingv1.NetworkPolicy) bool { return len(np.Spec.Ingress) == 0 })
	for _, d := range rest.Deployments {
		if d.Name != deploymentName {
			continue
		}
		for i := range d.Spec.Template.Spec.Containers {
			if c := &d.Spec.Template.Spec.Containers[i]; c.Name == coreName {
				setEnv(c, "COREAPI_LISTEN_ADDR", fmt.Sprintf("127.0.0.1:%d", corePort))
			}
		}
	}
	for _, s := range check(rest) {
		v.addf("base invariant: %s", s)
	}

	// The core key: the Secret coreapi reads it from.
	coreKeySecret := ""
	for _, name := range []string{"IDENTITY_KEYS_FILE", "IDENTITY_HMAC_KEY_FILE"} {
		if f := coreEnv[name]; f != "" {
			coreKeySecret = secretAt(corePod, core, path.Dir(f))
		}
	}
	if coreKeySecret == "" {
		v.addf("coreapi: its core key file is not in a mounted Secret")
	}
	catalog := coreCatalog(&v, b, corePod, core, coreEnv)

	// TLS on coreapi's API port (COREAPI_TLS_*): every proxy dials it
	// over https:// then, and http:// otherwise; no proxy mounts its key.
	tls := coreTLSOf(&v, corePod, core, coreEnv)
	for i := range corePod.Containers {
		if c := &corePod.Containers[i]; serviceOf(c) == "authproxy" {
			tls.checkProxy(&v, corePod, c, b.env(&v, c), "Deployment "+dep.Name)
		}
	}

	apps := 0
	for _, d := range b.Deployments {
		if d.Name == deploymentName {
			continue
		}
		apps++
		checkAppPod(&v, b, d, internal, admitters, corePort, coreKeySecret, catalog, tls)
	}
	if apps == 0 {
		v.addf("no app Deployment")
	}
	return v
}

func targetOf(sp corev1.ServicePort) intstr.IntOrString {
	if sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal == 0 {
		return intstr.FromInt32(sp.Port)
	}
	return sp.TargetPort
}

// allContainers lists a pod's init containers, then its containers.
func allContainers(pod *corev1.PodSpec) []*corev1.Container {
	var out []*corev1.Container
	for i := range pod.InitContainers {
		out = append(out, &pod.InitContainers[i])
	}
	for i := range pod.Containers {
		out = append(out, &pod.Containers[i])
	}
	return out
}

// resolvePortAll is resolvePort over init containers too (a native
// sidecar's ports).
func resolvePortAll(pod *corev1.PodSpec, p intstr.IntOrString) (string, int32) {
	for _, c := range allContainers(pod) {
		for _, cp := range c.Ports {
			if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
				return c.Name, cp.ContainerPort
			}
		}
	}
	if p.Type == intstr.Int {
		return "", p.IntVal
	}
	return "", 0
}

// secretAt returns the name of the Secret mounted in c at dir (or above
// it), or "".
func secretAt(pod *corev1.PodSpec, c *corev1.Container, dir string) string {
	for _, m := range c.VolumeMounts {
		if dir != m.MountPath && !strings.HasPrefix(dir, strings.TrimSuffix(m.MountPath, "/")+"/") {
			continue
		}
		for _, vol := range pod.Volumes {
			if vol.Name == m.Name && vol.Secret != nil {
				return vol.Secret.SecretName
			}
		}
	}
	return ""
}

// configMapAt returns the ConfigMap mounted in c at dir, or nil.
func configMapAt(b *bundle, pod *corev1.PodSpec, c *corev1.Container, dir string) *corev1.ConfigMap {
	for _, m := range c.VolumeMounts {
		if dir != m.MountPath {
			continue
		}
		for _, vol := range pod.Volumes {
			if vol.Name != m.Name || vol.ConfigMap == nil {
				continue
			}
			for _, cm := range b.ConfigMaps {
				if cm.Name == vol.ConfigMap.Name {
					return cm
				}
			}
		}
	}
	return nil
}

// sidecarRules is the part of the rules file the invariants need.
type sidecarRules struct {
	Upstreams map[string]struct {
		URL string `json:"url"`
	} `json:"upstreams"`
	Routes []struct {
		Prefix      string   `json:"prefix"`
		Permissions []string `json:"permissions"`
	} `json:"routes"`
}

// catalogEntry is the part of a permission catalog entry the invariants
// need; a catalog is {"permissions": [...]} or the list alone, in YAML or
// JSON.
type catalogEntry struct {
	Name string `json:"name"`
}

// coreCatalog returns the permissions coreapi's container declares in its
// catalog (PERMISSIONS inline, or PERMISSIONS_FILE in a mounted ConfigMap),
// built-ins included.
func coreCatalog(v *violations, b *bundle, pod *corev1.PodSpec, c *corev1.Container, env map[string]string) map[string]bool {
	names := map[string]bool{}
	builtins, err := builtinPermissions()
	if err != nil {
		v.addf("coreapi's built-in permissions: %v", err)
	}
	for _, n := range builtins {
		names[n] = true
	}
	text, inline := env["PERMISSIONS"]
	if f := env["PERMISSIONS_FILE"]; f != "" {
		cm := configMapAt(b, pod, c, path.Dir(f))
		if cm == nil || cm.Data[path.Base(f)] == "" {
			v.addf("coreapi: PERMISSIONS_FILE %q is not a file of a mounted ConfigMap", f)
			return names
		}
		text = cm.Data[path.Base(f)]
	} else if !inline {
		return names
	}
	var doc struct {
		Permissions []catalogEntry `json:"permissions"`
	}
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		if lerr := yaml.Unmarshal([]byte(text), &doc.Permissions); lerr != nil {
			v.addf("coreapi: permission catalog: %v", err)
		}
	}
	for _, e := range doc.Permissions {
		names[e.Name] = true
	}
	return names
}

// builtinPermissions reads coreapi's built-in permissions from the source
// of its permissions package (the deploy module cannot import it): the
// names of the entries of the literal `func builtins` returns (or of `var
// builtins`), constants of that file.
var builtinPermissions = sync.OnceValues(func() ([]string, error) {
	const file = "../../coreapi/internal/permissions/catalog.go"
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		return nil, err
	}
	consts := map[string]string{}
	var entries []ast.Expr
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil && fd.Name.Name == "builtins" && fd.Body != nil && len(fd.Body.List) == 1 {
			if ret, ok := fd.Body.List[0].(*ast.ReturnStmt); ok && len(ret.Results) == 1 {
				if lit, ok := ret.Results[0].(*ast.CompositeLit); ok {
					entries = lit.Elts
				}
			}
			continue
		}
		g, ok := d.(*ast.GenDecl)
		if !ok {
			continue
		}
		for _, sp := range g.Specs {
			vs, ok := sp.(*ast.ValueSpec)
			if !ok {
				continue
			}
			for i, n := range vs.Names {
				if i >= len(vs.Values) {
					break
				}
				switch {
				case g.Tok == token.CONST:
					if s, err := stringLit(vs.Values[i]); err == nil {
						consts[n.Name] = s
					}
				case g.Tok == token.VAR && n.Name == "builtins":
					if lit, ok := vs.Values[i].(*ast.CompositeLit); ok {
						entries = lit.Elts
					}
				}
			}
		}
	}
	var names []string
	for _, el := range entries {
		entry, ok := el.(*ast.CompositeLit)
		if !ok {
			return nil, fmt.Errorf("%s: an entry of builtins is not a literal", file)
		}
		for _, field := range entry.Elts {
			kv, ok := field.(*ast.KeyValueExpr)
			if !ok || fmt.Sprint(kv.Key) != "Name" {
				continue
			}
			name, err := stringLit(kv.Value)
			if id, ok := kv.Value.(*ast.Ident); ok {
				name, err = consts[id.Name], nil
			}
			if err != nil || name == "" {
				return nil, fmt.Errorf("%s: a builtins entry's Name is neither a string nor a constant of the file", file)
			}
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: found no builtins (a func returning a literal, or a var); the extraction is broken", file)
	}
	return names, nil
})

// coreTLS is how coreapi's API port speaks: TLS when on, with its key from
// keySecret's item keyItem.
type coreTLS struct {
	on                 bool
	keySecret, keyItem string
}

// coreTLSOf reads coreapi's COREAPI_TLS_CERT_FILE and COREAPI_TLS_KEY_FILE:
// both or neither, the key in a mounted Secret.
func coreTLSOf(v *violations, pod *corev1.PodSpec, core *corev1.Container, env map[string]string) coreTLS {
	cert, key := env["COREAPI_TLS_CERT_FILE"], env["COREAPI_TLS_KEY_FILE"]
	if (cert == "") != (key == "") {
		v.addf("coreapi: COREAPI_TLS_CERT_FILE and COREAPI_TLS_KEY_FILE: set both or neither")
	}
	if key == "" {
		return coreTLS{}
	}
	t := coreTLS{on: true, keySecret: secretAt(pod, core, path.Dir(key))}
	if t.keySecret == "" {
		v.addf("coreapi: COREAPI_TLS_KEY_FILE %s is not in a mounted Secret", key)
	}
	for _, m := range core.VolumeMounts {
		if strings.HasPrefix(key, strings.TrimSuffix(m.MountPath, "/")+"/") {
			t.keyItem = itemAt(pod, m.Name, strings.TrimPrefix(key, strings.TrimSuffix(m.MountPath, "/")+"/"))
		}
	}
	return t
}

// itemAt is the Secret key a volume shows at file (the file's name when
// the volume lists no items).
func itemAt(pod *corev1.PodSpec, volume, file string) string {
	for _, vol := range pod.Volumes {
		if vol.Name != volume || vol.Secret == nil {
			continue
		}
		for _, it := range vol.Secret.Items {
			if it.Path == file {
				return it.Key
			}
		}
	}
	return file
}

// checkProxy: a proxy (named name, environment env) dials coreapi with
// the scheme coreapi serves, and does not mount coreapi's TLS key.
func (t coreTLS) checkProxy(v *violations, pod *corev1.PodSpec, c *corev1.Container, env map[string]string, name string) {
	u, err := url.Parse(env["IDENTITY_URL"])
	switch {
	case err != nil:
	case t.on && u.Scheme != "https":
		v.addf("%s: coreapi serves TLS (COREAPI_TLS_CERT_FILE) but authproxy's IDENTITY_URL %q is not https://", name, env["IDENTITY_URL"])
	case !t.on && u.Scheme != "http":
		v.addf("%s: authproxy's IDENTITY_URL %q is not http://, but coreapi serves no TLS", name, env["IDENTITY_URL"])
	}
	if !t.on || t.keySecret == "" {
		return
	}
	for _, m := range c.VolumeMounts {
		for _, vol := range pod.Volumes {
			if vol.Name != m.Name || vol.Secret == nil || vol.Secret.SecretName != t.keySecret {
				continue
			}
			holds := len(vol.Secret.Items) == 0
			for _, it := range vol.Secret.Items {
				holds = holds || it.Key == t.keyItem
			}
			if holds {
				v.addf("%s: authproxy mounts coreapi's TLS key (%s of Secret %s)", name, t.keyItem, t.keySecret)
			}
		}
	}
}

func checkAppPod(v *violations, b *bundle, d *appsv1.Deployment, internal []*corev1.Service, admitters []metav1.LabelSelector, corePort int32, coreKeySecret string, catalog map[string]bool, tls coreTLS) {
	pod := &d.Spec.Template.Spec
	podLabels := labels.Set(d.Spec.Template.Labels)
	name := "Deployment " + d.Name

	var proxy *corev1.Container
	for i := range pod.InitContainers {
		if c := &pod.InitContainers[i]; serviceOf(c) == "authproxy" {
			if proxy != nil {
				v.addf("%s: two authproxy sidecars", name)
			}
			proxy = c
		}
	}
	for i := range pod.Containers {
		if serviceOf(&pod.Containers[i]) != "" {
			v.addf("%s: container %s runs %s as a regular container; run authproxy as a native sidecar", name, pod.Containers[i].Name, serviceOf(&pod.Containers[i]))
		}
	}
	if proxy == nil {
		v.addf("%s: no authproxy init container", name)
		return
	}
	if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		v.addf("%s: init container %s lacks restartPolicy: Always; it would have to exit before the app starts", name, proxy.Name)
	}
	if proxy.StartupProbe == nil {
		v.addf("%s: sidecar %s has no startup probe: the app would start before its proxy listens", name, proxy.Name)
	}
	// Readiness needs the key set from coreapi-internal, which has no
	// endpoint while every coreapi is unready (a database outage).
	checkHealthzProbes(v, proxy, name+": sidecar "+proxy.Name, "the kubelet would kill the sidecar during a coreapi outage, and back it off once coreapi is back")
	if proxy.ReadinessProbe == nil || proxy.ReadinessProbe.HTTPGet == nil || proxy.ReadinessProbe.HTTPGet.Path != "/readyz" {
		v.addf("%s: sidecar %s has no readiness probe on /readyz: the pod would take traffic before its proxy has the key set", name, proxy.Name)
	}

	// The pod may reach coreapi.
	admitted := false
	for _, s := range admitters {
		if sel, err := metav1.LabelSelectorAsSelector(&s); err == nil && sel.Matches(podLabels) {
			admitted = true
		}
	}
	if !admitted || podLabels[sidecarLabel] != "true" {
		v.addf("%s: pod not labelled %s=true or not admitted to coreapi: its proxy cannot reach coreapi", name, sidecarLabel)
	}

	env := b.env(v, proxy)
	_, proxyPort := addr(v, env, "PROXY_LISTEN_ADDR")
	adminHost, proxyAdmin := addr(v, env, "PROXY_ADMIN_ADDR")
	if httpPort, ok := namedPort(proxy, "http"); !ok || httpPort != proxyPort {
		v.addf("%s: sidecar containerPort http = %d, want PROXY_LISTEN_ADDR port %d", name, httpPort, proxyPort)
	}
	checkProbes(v, proxy, proxyAdmin, adminHost)
	checkProxyProcs(v, proxy, env, name+": sidecar "+proxy.Name)
	checkScratch(v, pod, name)

	// IDENTITY_URL names the internal Service on its coreapi port.
	okURL := false
	tls.checkProxy(v, pod, proxy, env, name)
	if u, err := url.Parse(env["IDENTITY_URL"]); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		host := strings.Split(u.Hostname(), ".")[0]
		for _, s := range internal {
			for _, sp := range s.Spec.Ports {
				okURL = okURL || (s.Name == host && u.Port() == fmt.Sprint(sp.Port))
			}
		}
	}
	if !okURL {
		v.addf("%s: IDENTITY_URL %q is not coreapi's internal Service", name, env["IDENTITY_URL"])
	}
	if _, set := env["UPSTREAM_URL"]; set {
		v.addf("%s: the sidecar sets UPSTREAM_URL; its upstreams come from the rules file", name)
	}

	// The rules file, from a ConfigMap; its upstreams are on loopback.
	var upstreamPorts []int32
	rf := env["RULES_FILE"]
	if cm := configMapAt(b, pod, proxy, path.Dir(rf)); rf == "" || cm == nil || cm.Data[path.Base(rf)] == "" {
		v.addf("%s: RULES_FILE %q is not a file of a mounted ConfigMap", name, rf)
	} else {
		var rules sidecarRules
		if err := yaml.Unmarshal([]byte(cm.Data[path.Base(rf)]), &rules); err != nil || len(rules.Upstreams) == 0 {
			v.addf("%s: rules file: no upstreams (%v)", name, err)
		}
		for up, u := range rules.Upstreams {
			pu, err := url.Parse(u.URL)
			if err != nil || !isLoopback(pu.Hostname()) {
				v.addf("%s: upstream %s at %q is not loopback: the app would be reachable around its proxy", name, up, u.URL)
				continue
			}
			var n int32
			if _, err := fmt.Sscan(pu.Port(), &n); err != nil {
				v.addf("%s: upstream %s at %q has no port", name, up, u.URL)
			}
			upstreamPorts = append(upstreamPorts, n)
		}
		// A permission outside coreapi's catalog is one no role can hold,
		// not even the owner's: every request to the route would be 403.
		for _, r := range rules.Routes {
			for _, p := range r.Permissions {
				if !catalog[p] {
					v.addf("%s: route %s requires %s, which coreapi's permission catalog does not declare: no role can hold it", name, r.Prefix, p)
				}
			}
		}
	}
	for _, c := range allContainers(pod) {
		for _, p := range c.Ports {
			if slices.Contains(upstreamPorts, p.ContainerPort) {
				v.addf("%s: container %s declares the upstream port %d", name, c.Name, p.ContainerPort)
			}
			if p.HostPort != 0 {
				v.addf("%s: container %s: hostPort %d", name, c.Name, p.HostPort)
			}
		}
	}

	// Services reach the proxy port only.
	selected := 0
	for _, s := range b.Services {
		if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
			continue
		}
		selected++
		for _, sp := range s.Spec.Ports {
			tp := targetOf(sp)
			owner, num := resolvePortAll(pod, tp)
			if owner != proxy.Name || num != proxyPort {
				v.addf("Service %s port %s targets %s, not the proxy port %d", s.Name, sp.Name, tp.String(), proxyPort)
			}
		}
	}
	if selected == 0 {
		v.addf("%s: no Service selects the app pod", name)
	}

	// NetworkPolicy: proxy port; admin ports from restricted peers.
	var adminPorts []int32
	for _, c := range allContainers(pod) {
		for _, p := range c.Ports {
			if p.ContainerPort != proxyPort {
				adminPorts = append(adminPorts, p.ContainerPort)
			}
		}
	}
	policies := 0
	for _, np := range b.NetworkPolicies {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		// Without policyTypes the API server makes it an Ingress policy.
		ingress := len(np.Spec.PolicyTypes) == 0 || slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
		if err != nil || !sel.Matches(podLabels) || !ingress {
			continue
		}
		policies++
		for i, rule := range np.Spec.Ingress {
			if len(rule.Ports) == 0 {
				v.addf("NetworkPolicy %s rule %d: no ports, admits every port", np.Name, i)
			}
			for _, p := range rule.Ports {
				if p.Port == nil || p.EndPort != nil {
					v.addf("NetworkPolicy %s rule %d: admits a port range", np.Name, i)
					continue
				}
				_, num := resolvePortAll(pod, *p.Port)
				switch {
				case num == proxyPort:
				case slices.Contains(adminPorts, num):
					if !restrictedPeers(rule.From) {
						v.addf("NetworkPolicy %s rule %d: admin port %d admitted from anywhere", np.Name, i, num)
					}
				default:
					v.addf("NetworkPolicy %s rule %d: admits port %s", np.Name, i, p.Port.String())
				}
			}
		}
	}
	if policies == 0 {
		v.addf("%s: no NetworkPolicy restricts ingress to the app pod", name)
	}

	// Keys: the sidecar holds coreapi's core key and the app's key; the
	// app holds its own key, the same Secret, and never the core key.
	sidecarCore := ""
	for _, n := range []string{"IDENTITY_KEYS_FILE", "IDENTITY_HMAC_KEY_FILE"} {
		if f := env[n]; f != "" {
			sidecarCore = secretAt(pod, proxy, path.Dir(f))
		}
	}
	if sidecarCore == "" || sidecarCore != coreKeySecret {
		v.addf("%s: the sidecar's core key is in Secret %q, not coreapi's %q", name, sidecarCore, coreKeySecret)
	}
	upstreamSecret := ""
	if f := env["UPSTREAM_KEYS_FILE"]; f != "" {
		upstreamSecret = secretAt(pod, proxy, path.Dir(f))
	}
	if upstreamSecret == "" {
		v.addf("%s: UPSTREAM_KEYS_FILE %q is not in a Secret mounted in the sidecar", name, env["UPSTREAM_KEYS_FILE"])
	}
	for i := range pod.Containers {
		c := &pod.Containers[i]
		if serviceOf(c) != "" {
			continue
		}
		for _, m := range c.VolumeMounts {
			for _, vol := range pod.Volumes {
				if vol.Name == m.Name && vol.Secret != nil && vol.Secret.SecretName == coreKeySecret {
					v.addf("%s: app container %s mounts the core key (Secret %s)", name, c.Name, coreKeySecret)
				}
			}
		}
		appEnv := b.env(v, c)
		f := appEnv["TOLLGATE_IDENTITY_KEYS_FILE"]
		if s := secretAt(pod, c, path.Dir(f)); f == "" || s == "" || s != upstreamSecret {
			v.addf("%s: app container %s: TOLLGATE_IDENTITY_KEYS_FILE %q is not in the Secret the sidecar signs with (%s)", name, c.Name, f, upstreamSecret)
		}
	}

	// Shutdown: the app containers get SIGTERM first and the native
	// sidecar only once they have exited, so the proxy keeps taking
	// requests. An app that stops listening at once, while the endpoint is
	// still in the Service, has its proxy answer 502 until the endpoint is
	// gone: each app container pauses in preStop first, as the base's
	// proxy does. The grace period covers the slowest app container's
	// pause and drain (its SHUTDOWN_TIMEOUT, the notes example's default
	// unset), then the whole stop of the sidecar.
	var appStop time.Duration
	appSteps := "no app container"
	for i := range pod.Containers {
		c := &pod.Containers[i]
		if serviceOf(c) != "" {
			continue
		}
		pause := preStopSleep(c)
		if pause <= 0 {
			v.addf("%s: app container %s has no preStop pause: it stops listening while the Service still sends to its proxy", name, c.Name)
		}
		drain := shutdownTimeout(v, c.Name, b.env(v, c), notesDrain)
		if pause+drain > appStop {
			appStop = pause + drain
			appSteps = fmt.Sprintf("app container %s's preStop pause %s + its drain %s", c.Name, pause, drain)
		}
	}
	sidecarStop, sidecarSteps := proxyStop(proxy, env, shutdownTimeout(v, proxy.Name, env, serviceDrain))
	if grace := gracePeriod(pod); grace <= appStop+sidecarStop {
		v.addf("%s: terminationGracePeriodSeconds (%s) does not exceed the app's shutdown and then the sidecar's (%s: %s; then %s)", name, grace, appStop+sidecarStop, appSteps, sidecarSteps)
	}

	// Availability, as for coreapi's pods; a PDB is required only with
	// more than one replica.
	if minPods, _, pdbs := checkAvailability(v, b, d); minPods > 1 && pdbs == 0 {
		v.addf("%s: %d replicas and no PodDisruptionBudget selects them: a node drain may evict them all at once", name, minPods)
	}

	checkPod(v, b, name, pod)
}

// preStopSleep is the pause of c's preStop sleep action, or 0.
func preStopSleep(c *corev1.Container) time.Duration {
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		return 0
	}
	return time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
}

// copyTree copies the directory src (recursively) to dir in fsys.
func copyTree(t *testing.T, fsys filesys.FileSystem, src, dir string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return fsys.WriteFile(path.Join(dir, filepath.ToSlash(rel)), data)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// renderSidecarTLS renders the overlay with its tls component on, and
// returns cert-manager's objects aside.
func renderSidecarTLS(t *testing.T) (*bundle, [][]byte) {
	t.Helper()
	fsys := filesys.MakeFsInMemory()
	copyBase(t, fsys, "/k/base")
	copyTree(t, fsys, sidecarDir, "/k/overlays/app-sidecar")
	on := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../overlays/app-sidecar]\ncomponents: [../overlays/app-sidecar/tls]\n"
	if err := fsys.WriteFile("/k/tls-on/kustomization.yaml", []byte(on)); err != nil {
		t.Fatal(err)
	}
	b, certs, err := renderAside(fsys, "/k/tls-on", "cert-manager.io")
	if err != nil {
		t.Fatal(err)
	}
	return b, certs
}

// The tls component (TLS between the proxies and coreapi) keeps every
// invariant of the overlay, sets only variables the services read, has
// every proxy dial https:// and trust the CA without mounting coreapi's
// key, and its certificate names the hosts the proxies dial.
func TestSidecarTLSComponent(t *testing.T) {
	b, certs := renderSidecarTLS(t)
	if v := checkSidecar(b); len(v) != 0 {
		t.Fatalf("overlay with tls is not clean:\n%s", strings.Join(v, "\n"))
	}
	vars := serviceVars(t)
	var names []string // the names the certificate must hold
	for _, d := range b.Deployments {
		pod := &d.Spec.Template.Spec
		for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
			svc := serviceOf(&c)
			env := map[string]string{}
			for _, e := range c.Env {
				env[e.Name] = e.Value
				if (svc == "authproxy" || svc == "coreapi") && !reads(vars, svc, e.Name) && !slices.Contains(contractProxyVars, e.Name) {
					t.Errorf("%s %s: %s is not read by %s", d.Name, c.Name, e.Name, svc)
				}
			}
			switch svc {
			case "authproxy":
				u, err := url.Parse(env["IDENTITY_URL"])
				if err != nil || u.Scheme != "https" || env["IDENTITY_CA_FILE"] == "" || secretAt(pod, &c, path.Dir(env["IDENTITY_CA_FILE"])) != "coreapi-internal-tls" {
					t.Errorf("%s %s: IDENTITY_URL %q, IDENTITY_CA_FILE %q: want https:// and the CA of coreapi-internal-tls", d.Name, c.Name, env["IDENTITY_URL"], env["IDENTITY_CA_FILE"])
					continue
				}
				names = append(names, u.Hostname())
			case "coreapi":
				if c.Name != coreName { // the migrate init container
					continue
				}
				if secretAt(pod, &c, path.Dir(env["COREAPI_TLS_KEY_FILE"])) != "coreapi-internal-tls" {
					t.Errorf("coreapi: COREAPI_TLS_KEY_FILE %q is not from coreapi-internal-tls", env["COREAPI_TLS_KEY_FILE"])
				}
			}
		}
	}
	if len(names) != 2 {
		t.Fatalf("proxies dialling coreapi over TLS: %v, want the base pod's and the sidecar", names)
	}
	var cert struct {
		Metadata struct{ Name string }
		Spec     struct {
			SecretName  string   `json:"secretName"`
			DNSNames    []string `json:"dnsNames"`
			IPAddresses []string `json:"ipAddresses"`
		}
	}
	found := false
	for _, doc := range certs {
		var c = cert
		if err := yaml.Unmarshal(doc, &c); err == nil && c.Spec.SecretName == "coreapi-internal-tls" {
			cert, found = c, true
		}
	}
	if !found {
		t.Fatal("no cert-manager Certificate for the Secret coreapi-internal-tls")
	}
	for _, n := range names {
		if !slices.Contains(cert.Spec.DNSNames, n) && !slices.Contains(cert.Spec.IPAddresses, n) {
			t.Errorf("certificate %s does not name %s, which a proxy dials", cert.Metadata.Name, n)
		}
	}

	// The checks see a proxy left on http://, and one given the key.
	c := b.deepCopy()
	setEnv(sidecarOf(t, c), "IDENTITY_URL", "http://coreapi-internal:8081")
	if got := strings.Join(checkSidecar(c), "\n"); !strings.Contains(got, "is not https://") {
		t.Errorf("a sidecar on http:// before a TLS coreapi: %q", got)
	}
	c = b.deepCopy()
	pod := &appDeployment(t, c).Spec.Template.Spec
	for i := range pod.Volumes {
		if s := pod.Volumes[i].Secret; s != nil && s.SecretName == "coreapi-internal-tls" {
			s.Items = nil // every key, tls.key included
		}
	}
	if got := strings.Join(checkSidecar(c), "\n"); !strings.Contains(got, "mounts coreapi's TLS key") {
		t.Errorf("a sidecar mounting coreapi's key: %q", got)
	}
}
