package k8s

import (
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	kustypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/tracing"
)

const (
	baseDir        = "base"
	deploymentName = "tollgate"
	proxyName      = "authproxy"
	coreName       = "coreapi"
	placeholder    = "REPLACE-ME"
)

// Defaults of the services when the variable is unset (the brief's contract).
var defaultAddr = map[string]string{
	"PROXY_LISTEN_ADDR":   "127.0.0.1:8080",
	"PROXY_ADMIN_ADDR":    "127.0.0.1:9090",
	"COREAPI_LISTEN_ADDR": "127.0.0.1:8081",
	"COREAPI_ADMIN_ADDR":  "127.0.0.1:9091",
}

// bundle is a set of typed Kubernetes objects.
type bundle struct {
	Deployments     []*appsv1.Deployment
	Services        []*corev1.Service
	ConfigMaps      []*corev1.ConfigMap
	Secrets         []*corev1.Secret
	ServiceAccounts []*corev1.ServiceAccount
	NetworkPolicies []*networkingv1.NetworkPolicy
	PDBs            []*policyv1.PodDisruptionBudget
	HPAs            []*autoscalingv2.HorizontalPodAutoscaler
	Jobs            []*batchv1.Job
}

func decodeAs[T any](doc []byte, list *[]*T) error {
	v := new(T)
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		return err
	}
	*list = append(*list, v)
	return nil
}

// add decodes one YAML document strictly (unknown or duplicate fields are
// errors) into the typed object for its apiVersion and kind.
func (b *bundle) add(doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return fmt.Errorf("read apiVersion/kind: %w", err)
	}
	var err error
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		err = decodeAs(doc, &b.Deployments)
	case "v1 Service":
		err = decodeAs(doc, &b.Services)
	case "v1 ConfigMap":
		err = decodeAs(doc, &b.ConfigMaps)
	case "v1 Secret":
		err = decodeAs(doc, &b.Secrets)
	case "v1 ServiceAccount":
		err = decodeAs(doc, &b.ServiceAccounts)
	case "networking.k8s.io/v1 NetworkPolicy":
		err = decodeAs(doc, &b.NetworkPolicies)
	case "policy/v1 PodDisruptionBudget":
		err = decodeAs(doc, &b.PDBs)
	case "autoscaling/v2 HorizontalPodAutoscaler":
		err = decodeAs(doc, &b.HPAs)
	case "batch/v1 Job":
		err = decodeAs(doc, &b.Jobs)
	default:
		return fmt.Errorf("unexpected object %q %q", tm.APIVersion, tm.Kind)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return nil
}

func (b *bundle) deepCopy() *bundle {
	c := &bundle{}
	for _, o := range b.Deployments {
		c.Deployments = append(c.Deployments, o.DeepCopy())
	}
	for _, o := range b.Services {
		c.Services = append(c.Services, o.DeepCopy())
	}
	for _, o := range b.ConfigMaps {
		c.ConfigMaps = append(c.ConfigMaps, o.DeepCopy())
	}
	for _, o := range b.Secrets {
		c.Secrets = append(c.Secrets, o.DeepCopy())
	}
	for _, o := range b.ServiceAccounts {
		c.ServiceAccounts = append(c.ServiceAccounts, o.DeepCopy())
	}
	for _, o := range b.NetworkPolicies {
		c.NetworkPolicies = append(c.NetworkPolicies, o.DeepCopy())
	}
	for _, o := range b.PDBs {
		c.PDBs = append(c.PDBs, o.DeepCopy())
	}
	for _, o := range b.HPAs {
		c.HPAs = append(c.HPAs, o.DeepCopy())
	}
	for _, o := range b.Jobs {
		c.Jobs = append(c.Jobs, o.DeepCopy())
	}
	return c
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// splitDocs splits a multi-document YAML file, dropping empty documents.
func splitDocs(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range docSep.Split(string(data), -1) {
		var probe map[string]any
		if err := yaml.Unmarshal([]byte(d), &probe); err == nil && len(probe) == 0 {
			continue
		}
		docs = append(docs, []byte(d))
	}
	return docs
}

// render builds the kustomization at dir and decodes its output strictly.
func render(fsys filesys.FileSystem, dir string) (*bundle, error) {
	b, _, err := renderAside(fsys, dir, "")
	return b, err
}

// renderAside is render with the objects of API group aside (cert-manager's,
// which the bundle has no types for) returned as YAML instead.
func renderAside(fsys filesys.FileSystem, dir, group string) (*bundle, [][]byte, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(fsys, dir)
	if err != nil {
		return nil, nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	b := &bundle{}
	var set [][]byte
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, nil, fmt.Errorf("render %s: %w", r.CurId(), err)
		}
		if group != "" && strings.HasPrefix(r.GetApiVersion(), group+"/") {
			set = append(set, y)
			continue
		}
		if err := b.add(y); err != nil {
			return nil, nil, fmt.Errorf("rendered %s: %w", r.CurId(), err)
		}
	}
	return b, set, nil
}

func renderBase(t *testing.T) *bundle {
	t.Helper()
	b, err := render(filesys.MakeFsOnDisk(), baseDir)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestManifestsDecodeStrictly decodes every committed manifest file with the
// k8s.io/api types, rejecting unknown fields, and checks that the
// kustomization lists exactly the manifest files present.
func TestManifestsDecodeStrictly(t *testing.T) {
	entries, err := os.ReadDir(baseDir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		if e.IsDir() || filepath.Ext(e.Name()) != ".yaml" || e.Name() == "kustomization.yaml" {
			continue
		}
		files = append(files, e.Name())
		t.Run(e.Name(), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(baseDir, e.Name()))
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

	data, err := os.ReadFile(filepath.Join(baseDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustypes.Kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	got := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(got, files) {
		t.Errorf("kustomization resources = %v, want every manifest file %v", got, files)
	}
}

func TestStrictDecodeRejectsUnknownFields(t *testing.T) {
	doc := []byte(`apiVersion: v1
kind: Service
metadata: {name: x}
spec:
  ports: [{port: 80, targetPrt: http}]
`)
	var b bundle
	if err := b.add(doc); err == nil {
		t.Fatal("a misspelt field decoded without error")
	}
	if err := b.add([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n")); err == nil {
		t.Fatal("an unexpected kind decoded without error")
	}
}

// TestBaseInvariants renders the base and checks every invariant.
func TestBaseInvariants(t *testing.T) {
	b := renderBase(t)
	for _, v := range check(b) {
		t.Error(v)
	}
	// Objects the issue asks for.
	counts := map[string]int{
		"Deployment": len(b.Deployments), "Service": len(b.Services), "ConfigMap": len(b.ConfigMaps),
		"Secret": len(b.Secrets), "ServiceAccount": len(b.ServiceAccounts),
		"NetworkPolicy": len(b.NetworkPolicies), "PodDisruptionBudget": len(b.PDBs),
		"HorizontalPodAutoscaler": len(b.HPAs),
	}
	for kind, n := range counts {
		if n == 0 {
			t.Errorf("rendered base has no %s", kind)
		}
	}
}

// TestCommittedSecretsArePlaceholders keeps real key material out of git.
func TestCommittedSecretsArePlaceholders(t *testing.T) {
	b := renderBase(t)
	if len(b.Secrets) != 6 {
		t.Fatalf("%d Secrets, want 6 (identity HMAC key, signing keys, MFA keys, API-key pepper, database, mail server)", len(b.Secrets))
	}
	for _, s := range b.Secrets {
		values := map[string]string{}
		for k, v := range s.Data {
			values[k] = string(v)
		}
		for k, v := range s.StringData {
			values[k] = v
		}
		if len(values) == 0 {
			t.Errorf("Secret %s: empty", s.Name)
		}
		for k, v := range values {
			if !strings.Contains(v, placeholder) || strings.Contains(v, "-----BEGIN") {
				t.Errorf("Secret %s key %s: value is not a %s placeholder", s.Name, k, placeholder)
			}
			// A placeholder must fail where the service reads it, so that a
			// pod deployed with it stops at start-up.
			var err error
			switch {
			case k == "identity.key":
				_, err = identity.ParseKey(v)
			case strings.HasPrefix(s.Name, "tollgate-smtp") && k == "url":
				err = smtpURL(v)
			case k == "url":
				_, err = pgx.ParseConfig(v)
			case k == "mfa.keys":
				err = mfaKeys(v)
			case k == "pepper":
				_, err = identity.ParseKey(v)
			case strings.HasSuffix(k, ".pem"):
				if blk, _ := pem.Decode([]byte(v)); blk != nil {
					err = nil
				} else {
					err = errors.New("no PEM block")
				}
			default:
				t.Errorf("Secret %s: unexpected key %s", s.Name, k)
				continue
			}
			if err == nil {
				t.Errorf("Secret %s key %s: placeholder %q parses as a real value", s.Name, k, v)
			}
		}
	}
}

// TestDocumentedOverlay renders the production overlay shown in
// docs/operations.md, with made-up secret files, and checks that it keeps
// every invariant, replaces every placeholder, and gives the replaced
// Secrets new names (so that applying it rolls the pods).
func TestDocumentedOverlay(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n# overlays/prod/kustomization.yaml\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/operations.md has no overlays/prod/kustomization.yaml example")
	}
	fsys := filesys.MakeFsInMemory()
	copyBase(t, fsys, "/k/base")
	copyDir(t, fsys, natsComponentDir, "/k/components/nats-credentials")
	files := map[string]string{
		"kustomization.yaml":                         string(m[1]),
		"secrets/identity.key":                       "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0=\n",
		"secrets/keys/20260101T000000Z-1a2b3c4d.pem": "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
		"secrets/database-url":                       "postgres://app:pw@db:5432/app?sslmode=verify-full",
		"secrets/smtp-url":                           "smtp://tollgate:pw@smtp.example.com:587?starttls=required",
		"secrets/mfa.keys":                           "mfa1:" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")) + "\n",
		"secrets/api-key.pepper":                     base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210")) + "\n",
		"secrets/nats-coreapi-url":                   "nats://coreapi:0123abcd@nats.nats.svc:4222",
		"secrets/nats-authproxy-url":                 "nats://authproxy:4567cdef@nats.nats.svc:4222",
	}
	for name, content := range files {
		if err := fsys.WriteFile(path.Join("/k/overlays/prod", name), []byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	b, err := render(fsys, "/k/overlays/prod")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range check(b) {
		t.Error(v)
	}
	// The variables it sets are ones the services read, and it sets every
	// one they require (a misspelt name in the example would be copied).
	vars := serviceVars(t)
	for _, v := range append(unknownVars(b, vars), missingRequired(b, vars)...) {
		t.Errorf("the documented overlay: %s", v)
	}
	var v violations
	if err := trustsIngress(b.env(&v, ctr(t, b, proxyName))); err != nil {
		t.Errorf("authproxy: %v", err)
	}
	base := renderBase(t)
	baseNames := map[string]bool{}
	for _, s := range base.Secrets {
		baseNames[s.Name] = true
	}
	mounted := map[string]bool{}
	for _, vol := range b.Deployments[0].Spec.Template.Spec.Volumes {
		if vol.Secret != nil {
			mounted[vol.Secret.SecretName] = true
		}
	}
	for _, s := range b.Secrets {
		if baseNames[s.Name] {
			t.Errorf("Secret %s kept the base's name: applying the overlay would not roll the pods", s.Name)
		}
		for k, v := range s.Data {
			if strings.Contains(string(v), placeholder) {
				t.Errorf("Secret %s key %s: placeholder left in the overlay", s.Name, k)
			}
		}
		if s.Namespace != "tollgate" {
			t.Errorf("Secret %s namespace = %q, want tollgate", s.Name, s.Namespace)
		}
	}
	for name := range mounted {
		found := false
		for _, s := range b.Secrets {
			found = found || s.Name == name
		}
		if !found {
			t.Errorf("the Deployment mounts Secret %s, which the overlay does not render", name)
		}
	}
	for _, c := range allContainers(&b.Deployments[0].Spec.Template.Spec) {
		if !strings.HasPrefix(c.Image, "registry.example.com/tollgate/") {
			t.Errorf("container %s image %s, want the overlay's", c.Name, c.Image)
		}
		if err := pinned(c.Image); err != nil {
			t.Errorf("container %s: %v", c.Name, err)
		}
	}
}

var digestRef = regexp.MustCompile(`@sha256:[0-9a-f]{64}$`)

// pinned: an image reference names its digest. A tag may be pushed again,
// and with imagePullPolicy IfNotPresent a node that pulled it before keeps
// the old build while others pull the new one.
func pinned(image string) error {
	if !digestRef.MatchString(image) {
		return fmt.Errorf("image %s is not pinned by digest (@sha256:...): a tag pushed again runs different builds on different nodes", image)
	}
	return nil
}

func TestPinned(t *testing.T) {
	for _, tc := range []struct {
		image string
		ok    bool
	}{
		{"registry.example.com/tollgate/coreapi:0.1.0", false},
		{"registry.example.com/tollgate/coreapi", false},
		{"registry.example.com/tollgate/coreapi:0.1.0@sha256:" + strings.Repeat("a", 64), true},
		{"registry.example.com/tollgate/coreapi@sha256:" + strings.Repeat("0", 64), true},
		{"registry.example.com/tollgate/coreapi@sha256:" + strings.Repeat("a", 63), false},
		{"registry.example.com/tollgate/coreapi@sha256:" + strings.Repeat("A", 64), false},
		{"registry.example.com/tollgate/coreapi:0.1.0@sha256:REPLACE-ME", false},
	} {
		if err := pinned(tc.image); (err == nil) != tc.ok {
			t.Errorf("pinned(%q) = %v, want ok %v", tc.image, err, tc.ok)
		}
	}
}

// trustsIngress checks that a proxy behind the cluster's ingress lists it
// in TRUSTED_PROXY_CIDRS. The Service is a ClusterIP: every client comes
// through an ingress or a gateway, and without it each one has the
// ingress's address, so coreapi's per-address limits (SIGNUP_PER_HOUR,
// OAUTH_AUTHORIZE_PER_MINUTE, SIGNIN_FAILURES_PER_HOUR,
// PASSWORD_CHECKS_PER_HOUR) and the proxy's STREAM_MAX_PER_IP count every
// client together.
func trustsIngress(env map[string]string) error {
	s := strings.TrimSpace(env["TRUSTED_PROXY_CIDRS"])
	if s == "" {
		return errors.New("TRUSTED_PROXY_CIDRS is not set: every client behind the ingress shares its address and its per-address limits")
	}
	for _, c := range strings.Split(s, ",") {
		_, n, err := net.ParseCIDR(strings.TrimSpace(c))
		if err != nil {
			return fmt.Errorf("TRUSTED_PROXY_CIDRS entry %q: %v", c, err)
		}
		if ones, _ := n.Mask.Size(); ones == 0 {
			return fmt.Errorf("TRUSTED_PROXY_CIDRS entry %q trusts every peer: any client chooses its own address", c)
		}
	}
	return nil
}

func TestTrustsIngress(t *testing.T) {
	for _, tc := range []struct {
		val string
		ok  bool
	}{
		{"", false},
		{"10.244.0.0/16", true},
		{"10.244.0.0/16, fd00::/64", true},
		{"0.0.0.0/0", false},
		{"10.244.0.0/16,::/0", false},
		{"10.244.0.1", false},
	} {
		if err := trustsIngress(map[string]string{"TRUSTED_PROXY_CIDRS": tc.val}); (err == nil) != tc.ok {
			t.Errorf("trustsIngress(%q) = %v, want ok %v", tc.val, err, tc.ok)
		}
	}
}

func copyBase(t *testing.T, fsys filesys.FileSystem, dir string) {
	t.Helper()
	copyDir(t, fsys, baseDir, dir)
}

// copyDir copies the files of the directory from into dir of fsys.
func copyDir(t *testing.T, fsys filesys.FileSystem, from, dir string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := fsys.WriteFile(path.Join(dir, e.Name()), data); err != nil {
			t.Fatal(err)
		}
	}
}

// TestInvariantsCatchBreakage proves each check fails on a deliberately
// broken copy of the rendered base.
func TestInvariantsCatchBreakage(t *testing.T) {
	base := renderBase(t)
	if v := check(base); len(v) != 0 {
		t.Fatalf("base is not clean: %v", v)
	}
	tests := []struct {
		name   string
		mutate func(t *testing.T, b *bundle)
		want   string
	}{
		{"coreapi stops before the proxy has drained", func(t *testing.T, b *bundle) {
			ctr(t, b, coreName).Lifecycle.PreStop.Sleep.Seconds = 10
		}, "coreapi's preStop pause (10s) ends before"},
		{"grace period shorter than coreapi's pause and drain", func(t *testing.T, b *bundle) {
			b.Deployments[0].Spec.Template.Spec.TerminationGracePeriodSeconds = new(int64(40))
		}, "terminationGracePeriodSeconds (40s) does not exceed coreapi's shutdown"},
		{"grace period without the relay's deregistration and NATS close", func(t *testing.T, b *bundle) {
			// coreapi's pause, drain and relay's last publication: 42s.
			b.Deployments[0].Spec.Template.Spec.TerminationGracePeriodSeconds = new(int64(45))
		}, "terminationGracePeriodSeconds (45s) does not exceed coreapi's shutdown (48s"},
		{"coreapi's own SHUTDOWN_TIMEOUT longer than the ConfigMap's", func(t *testing.T, b *bundle) {
			setEnv(ctr(t, b, coreName), "SHUTDOWN_TIMEOUT", "20s")
		}, "does not exceed coreapi's shutdown (53s: preStop pause 22s + SHUTDOWN_TIMEOUT 20s"},
		{"tracing on", func(t *testing.T, b *bundle) {
			for _, cm := range b.ConfigMaps {
				if strings.HasPrefix(cm.Name, "tollgate-config") {
					cm.Data["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://otel-collector:4318"
				}
			}
		}, "does not exceed coreapi's shutdown (53s: preStop pause 22s + SHUTDOWN_TIMEOUT 15s + the relay's deregistration 1s, last publication 5s and NATS close 5s + the last spans' export 5s)"},
		{"the proxy's stop outlasts the grace period", func(t *testing.T, b *bundle) {
			setEnv(ctr(t, b, proxyName), "SHUTDOWN_TIMEOUT", "41s")
		}, "terminationGracePeriodSeconds (50s) does not exceed authproxy's shutdown (51s: preStop pause 5s + SHUTDOWN_TIMEOUT 41s + its NATS close 5s"},
		{"coreapi's parallelism left to the node", func(t *testing.T, b *bundle) {
			c := ctr(t, b, coreName)
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMAXPROCS" })
			delete(c.Resources.Limits, corev1.ResourceCPU)
		}, "neither GOMAXPROCS nor a cpu limit"},
		{"one scratch volume for both containers", func(t *testing.T, b *bundle) {
			ctr(t, b, coreName).VolumeMounts = append(ctr(t, b, coreName).VolumeMounts, corev1.VolumeMount{Name: "authproxy-tmp", MountPath: "/var/tmp"})
		}, "emptyDir authproxy-tmp is written by authproxy and coreapi"},
		{"authproxy's parallelism left to the node", func(t *testing.T, b *bundle) {
			c := ctr(t, b, proxyName)
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMAXPROCS" })
		}, "authproxy: neither GOMAXPROCS nor a cpu limit"},
		{"coreapi's GOMAXPROCS not a number", func(t *testing.T, b *bundle) {
			setEnv(ctr(t, b, coreName), "GOMAXPROCS", "two")
		}, "GOMAXPROCS \"two\""},
		{"coreapi on all interfaces", func(t *testing.T, b *bundle) {
			setEnv(ctr(t, b, coreName), "COREAPI_LISTEN_ADDR", "0.0.0.0:8081")
		}, "not loopback"},
		{"coreapi on an empty host", func(t *testing.T, b *bundle) {
			c := ctr(t, b, coreName)
			setEnv(c, "COREAPI_LISTEN_ADDR", ":8081")
		}, "not loopback"},
		{"the proxy left on its loopback default", func(t *testing.T, b *bundle) {
			c := ctr(t, b, proxyName)
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "PROXY_LISTEN_ADDR" })
		}, "PROXY_LISTEN_ADDR host \"127.0.0.1\" is loopback"},
		{"coreapi declares its API port", func(t *testing.T, b *bundle) {
			c := ctr(t, b, coreName)
			c.Ports = append(c.Ports, corev1.ContainerPort{Name: "api", ContainerPort: 8081})
		}, "declares its API port"},
		{"service targets coreapi by number", func(t *testing.T, b *bundle) {
			b.Services[0].Spec.Ports[0].TargetPort = intstr.FromInt32(8081)
		}, "Service tollgate port http targets"},
		{"service targets coreapi admin by name", func(t *testing.T, b *bundle) {
			b.Services[0].Spec.Ports = append(b.Services[0].Spec.Ports,
				corev1.ServicePort{Name: "core", Port: 9091, TargetPort: intstr.FromString("core-admin")})
		}, "targets coreapi"},
		{"service targets proxy admin", func(t *testing.T, b *bundle) {
			b.Services[0].Spec.Ports[0].TargetPort = intstr.FromString("admin")
		}, "not the proxy port"},
		{"no service for the pod", func(t *testing.T, b *bundle) {
			b.Services[0].Spec.Selector = map[string]string{"app": "other"}
		}, "no Service selects"},
		{"host network", func(t *testing.T, b *bundle) {
			b.Deployments[0].Spec.Template.Spec.HostNetwork = true
		}, "hostNetwork"},
		{"host port", func(t *testing.T, b *bundle) {
			ctr(t, b, proxyName).Ports[0].HostPort = 8080
		}, "hostPort"},
		{"coreapi not on loopback", func(t *testing.T, b *bundle) {
			setEnv(ctr(t, b, proxyName), "IDENTITY_URL", "http://coreapi:8081")
		}, "IDENTITY_URL"},
		{"the deprecated UPSTREAM_URL", func(t *testing.T, b *bundle) {
			setEnv(ctr(t, b, proxyName), "UPSTREAM_URL", "http://127.0.0.1:8081")
		}, "UPSTREAM_URL is deprecated"},
		{"readiness probe on the API port", func(t *testing.T, b *bundle) {
			ctr(t, b, proxyName).ReadinessProbe.HTTPGet.Port = intstr.FromString("http")
		}, "probe"},
		{"liveness probe on coreapi API port", func(t *testing.T, b *bundle) {
			ctr(t, b, coreName).LivenessProbe.HTTPGet.Port = intstr.FromInt32(8081)
		}, "not its admin port"},
		{"http probe against a loopback admin", func(t *testing.T, b *bundle) {
			setEnv(ctr(t, b, coreName), "COREAPI_ADMIN_ADDR", "127.0.0.1:9091")
		}, "cannot reach"},
		{"coreapi's startup probe waits on the database", func(t *testing.T, b *bundle) {
			ctr(t, b, coreName).StartupProbe.HTTPGet.Path = "/readyz"
		}, "startup probe on /readyz, not /healthz"},
		{"coreapi's liveness probe waits on the database", func(t *testing.T, b *bundle) {
			ctr(t, b, coreName).LivenessProbe.HTTPGet.Path = "/readyz"
		}, "liveness probe on /readyz, not /healthz"},
		{"the proxy's startup probe waits on coreapi", func(t *testing.T, b *bundle) {
			ctr(t, b, proxyName).StartupProbe.HTTPGet.Path = "/readyz"
		}, "authproxy: startup probe on /readyz, not /healthz"},
		{"the proxy's liveness probe waits on coreapi", func(t *testing.T, b *bundle) {
			ctr(t, b, proxyName).LivenessProbe.HTTPGet.Path = "/readyz"
		}, "authproxy: liveness probe on /readyz, not /healthz"},
		{"coreapi ready while its database is down", func(t *testing.T, b *bundle) {
			ctr(t, b, coreName).ReadinessProbe.HTTPGet.Path = "/healthz"
		}, "coreapi: readiness probe on /healthz, not /readyz"},
		{"the proxy ready without its key set", func(t *testing.T, b *bundle) {
			ctr(t, b, proxyName).ReadinessProbe.HTTPGet.Path = "/healthz"
		}, "authproxy: readiness probe on /healthz, not /readyz"},
		{"coreapi's readiness probe at the kubelet's default timeout", func(t *testing.T, b *bundle) {
			ctr(t, b, coreName).ReadinessProbe.TimeoutSeconds = 0
		}, "coreapi: readiness probe gives up after 1s, before /readyz's own bound on its database steps (2s)"},
		{"coreapi's readiness probe timeout equal to /readyz's bound", func(t *testing.T, b *bundle) {
			ctr(t, b, coreName).ReadinessProbe.TimeoutSeconds = 2
		}, "coreapi: readiness probe gives up after 2s"},
		{"missing readiness probe", func(t *testing.T, b *bundle) {
			ctr(t, b, coreName).ReadinessProbe = nil
		}, "no readiness probe"},
		{"database password in a ConfigMap", func(t *testing.T, b *bundle) {
			b.ConfigMaps[0].Data["DATABASE_URL"] = "postgres://app:hunter2@db:5432/app"
		}, "secret-looking value"},
		{"NATS token in a ConfigMap", func(t *testing.T, b *bundle) {
			b.ConfigMaps[0].Data["NATS_URL"] = "nats://s3cr3t-t0ken@nats:4222"
		}, "secret-looking value"},
		{"client secret in a ConfigMap", func(t *testing.T, b *bundle) {
			b.ConfigMaps[0].Data["OIDC_GOOGLE_CLIENT_SECRET"] = "x"
		}, "secret-looking key"},
		{"API-key pepper from a Secret in the environment", func(t *testing.T, b *bundle) {
			c := ctr(t, b, coreName)
			c.Env = append(c.Env, corev1.EnvVar{Name: "API_KEY_PEPPER", ValueFrom: &corev1.EnvVarSource{
				SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "tollgate-api-key-pepper"}, Key: "pepper"}}})
		}, "container coreapi: API_KEY_PEPPER from Secret tollgate-api-key-pepper in the environment; mount the Secret and set API_KEY_PEPPER_FILE"},
		{"identity keys from a Secret taken whole into the proxy's environment", func(t *testing.T, b *bundle) {
			b.Secrets = append(b.Secrets, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "proxy-env"},
				Data: map[string][]byte{"KEYS": []byte("core:c2VjcmV0")}})
			c := ctr(t, b, proxyName)
			c.EnvFrom = append(c.EnvFrom, corev1.EnvFromSource{Prefix: "IDENTITY_",
				SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "proxy-env"}}})
		}, "container authproxy: IDENTITY_KEYS from Secret proxy-env in the environment (envFrom)"},
		{"database URL from a Secret in the environment", func(t *testing.T, b *bundle) {
			c := ctr(t, b, coreName)
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "DATABASE_URL_FILE" })
			c.Env = append(c.Env, corev1.EnvVar{Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{
				SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "tollgate-database"}, Key: "url"}}})
		}, "container coreapi: DATABASE_URL from Secret tollgate-database in the environment; mount the Secret and set DATABASE_URL_FILE"},
		{"the migration's database URL from a Secret in the environment", func(t *testing.T, b *bundle) {
			b.Deployments[0].Spec.Template.Spec.InitContainers[0].Env = []corev1.EnvVar{{Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{
				SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "tollgate-database"}, Key: "url"}}}}
		}, "container migrate: DATABASE_URL from Secret tollgate-database in the environment; mount the Secret and set DATABASE_URL_FILE"},
		{"mail server's URL from a Secret in the environment", func(t *testing.T, b *bundle) {
			c := ctr(t, b, coreName)
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "SMTP_URL_FILE" })
			c.Env = append(c.Env, corev1.EnvVar{Name: "SMTP_URL", ValueFrom: &corev1.EnvVarSource{
				SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "tollgate-smtp"}, Key: "url"}}})
		}, "container coreapi: SMTP_URL from Secret tollgate-smtp in the environment; mount the Secret and set SMTP_URL_FILE"},
		{"NATS URL from a Secret in the proxy's environment", func(t *testing.T, b *bundle) {
			ctr(t, b, proxyName).Env = append(ctr(t, b, proxyName).Env, corev1.EnvVar{Name: "NATS_URL", ValueFrom: &corev1.EnvVarSource{
				SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "tollgate-nats"}, Key: "authproxy-url"}}})
		}, "container authproxy: NATS_URL from Secret tollgate-nats in the environment; mount the Secret and set NATS_URL_FILE"},
		{"NATS_URL_FILE beside the ConfigMap's NATS_URL", func(t *testing.T, b *bundle) {
			setEnv(ctr(t, b, coreName), "NATS_URL_FILE", "/var/run/secrets/tollgate/database/url")
		}, "container coreapi: sets NATS_URL and NATS_URL_FILE (/var/run/secrets/tollgate/database/url): the service refuses to start with both"},
		{"NATS_URL_FILE outside a mounted Secret", func(t *testing.T, b *bundle) {
			c := ctr(t, b, proxyName)
			setEnv(c, "NATS_URL", "")
			setEnv(c, "NATS_URL_FILE", "/etc/nats/url")
		}, `container authproxy: NATS_URL_FILE "/etc/nats/url" is not a file of a mounted Secret`},
		{"coreapi without the database Secret", func(t *testing.T, b *bundle) {
			c := ctr(t, b, coreName)
			c.VolumeMounts = slices.DeleteFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "database" })
		}, `coreapi: DATABASE_URL_FILE "/var/run/secrets/tollgate/database/url" is not inside a mounted Secret (coreapi would not start)`},
		{"the migration without the database Secret", func(t *testing.T, b *bundle) {
			b.Deployments[0].Spec.Template.Spec.InitContainers[0].VolumeMounts = nil
		}, "init container migrate: runs `coreapi migrate up` without DATABASE_URL_FILE in a mounted Secret"},
		{"proxy mounts the database URL", func(t *testing.T, b *bundle) {
			c := ctr(t, b, proxyName)
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "database", MountPath: "/db"})
		}, "authproxy: mounts the database URL (volume database); they belong to coreapi only"},
		{"proxy mounts the mail server's URL", func(t *testing.T, b *bundle) {
			c := ctr(t, b, proxyName)
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "smtp", MountPath: "/smtp"})
		}, "authproxy: mounts the mail server's URL (volume smtp)"},
		{"mail server's URL in the database's Secret", func(t *testing.T, b *bundle) {
			setEnv(ctr(t, b, coreName), "SMTP_URL_FILE", "/var/run/secrets/tollgate/database/smtp-url")
		}, "coreapi: the mail server's URL share volume database with other key material"},
		{"HMAC key as a literal env value", func(t *testing.T, b *bundle) {
			c := ctr(t, b, proxyName)
			c.Env = append(c.Env, corev1.EnvVar{Name: "IDENTITY_HMAC_KEY", Value: "c2VjcmV0"})
		}, "secret-looking key"},
		{"PEM in a ConfigMap", func(t *testing.T, b *bundle) {
			b.ConfigMaps[0].Data["RULES"] = "-----BEGIN PRIVATE KEY-----\nabc"
		}, "secret-looking value"},
		{"writable root filesystem", func(t *testing.T, b *bundle) {
			ctr(t, b, proxyName).SecurityContext.ReadOnlyRootFilesystem = new(false)
		}, "readOnlyRootFilesystem"},
		{"privilege escalation left to default in the migration", func(t *testing.T, b *bundle) {
			b.Deployments[0].Spec.Template.Spec.InitContainers[0].SecurityContext.AllowPrivilegeEscalation = nil
		}, "allowPrivilegeEscalation"},
		{"capabilities kept", func(t *testing.T, b *bundle) {
			ctr(t, b, coreName).SecurityContext.Capabilities.Drop = nil
		}, "drop ALL"},
		{"capability added", func(t *testing.T, b *bundle) {
			ctr(t, b, coreName).SecurityContext.Capabilities.Add = []corev1.Capability{"NET_BIND_SERVICE"}
		}, "adds capabilities"},
		{"may run as root", func(t *testing.T, b *bundle) {
			b.Deployments[0].Spec.Template.Spec.SecurityContext.RunAsNonRoot = nil
			ctr(t, b, coreName).SecurityContext.RunAsNonRoot = nil
		}, "runAsNonRoot"},
		{"runs as uid 0", func(t *testing.T, b *bundle) {
			ctr(t, b, coreName).SecurityContext.RunAsUser = new(int64(0))
		}, "uid 0"},
		{"privileged", func(t *testing.T, b *bundle) {
			ctr(t, b, coreName).SecurityContext.Privileged = new(true)
		}, "privileged"},
		{"no seccomp profile", func(t *testing.T, b *bundle) {
			b.Deployments[0].Spec.Template.Spec.SecurityContext.SeccompProfile = nil
			ctr(t, b, proxyName).SecurityContext.SeccompProfile = nil
		}, "seccomp"},
		{"host path volume", func(t *testing.T, b *bundle) {
			pod := &b.Deployments[0].Spec.Template.Spec
			pod.Volumes = append(pod.Volumes, corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
		}, "volume host"},
		{"service account token mounted", func(t *testing.T, b *bundle) {
			b.Deployments[0].Spec.Template.Spec.AutomountServiceAccountToken = nil
			b.ServiceAccounts[0].AutomountServiceAccountToken = nil
		}, "service account token"},
		{"no memory limit", func(t *testing.T, b *bundle) {
			ctr(t, b, coreName).Resources.Limits = nil
		}, "memory limit"},
		{"no NetworkPolicy", func(t *testing.T, b *bundle) {
			b.NetworkPolicies = nil
		}, "no NetworkPolicy"},
		{"NetworkPolicy rule without ports", func(t *testing.T, b *bundle) {
			np := b.NetworkPolicies[0]
			np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{})
		}, "every port"},
		{"NetworkPolicy admits coreapi", func(t *testing.T, b *bundle) {
			np := b.NetworkPolicies[0]
			p := intstr.FromInt32(8081)
			np.Spec.Ingress[0].Ports = append(np.Spec.Ingress[0].Ports, networkingv1.NetworkPolicyPort{Port: &p})
		}, "coreapi's API port"},
		{"NetworkPolicy without policyTypes admits coreapi", func(t *testing.T, b *bundle) {
			// The API server defaults policyTypes to Ingress: the rule applies.
			np := b.NetworkPolicies[0].DeepCopy()
			np.Name = "extra"
			np.Spec.PolicyTypes = nil
			p := intstr.FromInt32(8081)
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: &p}}}}
			b.NetworkPolicies = append(b.NetworkPolicies, np)
		}, "NetworkPolicy extra rule 0: admits coreapi's API port"},
		{"NetworkPolicy admits admin ports from anywhere", func(t *testing.T, b *bundle) {
			b.NetworkPolicies[0].Spec.Ingress[1].From = nil
		}, "from anywhere"},
		{"NetworkPolicy admits a port range", func(t *testing.T, b *bundle) {
			np := b.NetworkPolicies[0]
			np.Spec.Ingress[0].Ports[0].EndPort = new(int32(9000))
		}, "range"},
		{"proxy mounts the signing keys", func(t *testing.T, b *bundle) {
			c := ctr(t, b, proxyName)
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "signing-keys", MountPath: "/keys"})
		}, "signing keys"},
		{"coreapi without the HMAC key file", func(t *testing.T, b *bundle) {
			c := ctr(t, b, coreName)
			c.VolumeMounts = slices.DeleteFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "identity-hmac" })
		}, "IDENTITY_HMAC_KEY_FILE"},
		{"core keys moved to the list form for a rotation", func(t *testing.T, b *bundle) {
			for _, name := range []string{proxyName, coreName} {
				c := ctr(t, b, name)
				c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "IDENTITY_HMAC_KEY_FILE" })
				setEnv(c, "IDENTITY_KEYS_FILE", "/var/run/secrets/tollgate/identity/identity.keys")
			}
		}, ""},
		{"coreapi's key list outside a mounted Secret", func(t *testing.T, b *bundle) {
			c := ctr(t, b, coreName)
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "IDENTITY_HMAC_KEY_FILE" })
			setEnv(c, "IDENTITY_KEYS_FILE", "/etc/tollgate/identity.keys")
		}, `coreapi: IDENTITY_KEYS_FILE "/etc/tollgate/identity.keys" is not inside a mounted Secret`},
		{"both forms of the core keys", func(t *testing.T, b *bundle) {
			setEnv(ctr(t, b, coreName), "IDENTITY_KEYS_FILE", "/var/run/secrets/tollgate/identity/identity.keys")
		}, "coreapi: sets both IDENTITY_KEYS_FILE and IDENTITY_HMAC_KEY_FILE: the service refuses to start"},
		{"the proxy without a core key file", func(t *testing.T, b *bundle) {
			c := ctr(t, b, proxyName)
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return strings.HasPrefix(e.Name, "IDENTITY_") && e.Name != "IDENTITY_URL" })
		}, "authproxy: sets neither IDENTITY_KEYS_FILE nor IDENTITY_HMAC_KEY_FILE"},
		{"coreapi without the MFA key file", func(t *testing.T, b *bundle) {
			c := ctr(t, b, coreName)
			c.VolumeMounts = slices.DeleteFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "mfa-keys" })
		}, "MFA_ENCRYPTION_KEYS_FILE"},
		{"coreapi without MFA_ENCRYPTION_KEYS_FILE", func(t *testing.T, b *bundle) {
			c := ctr(t, b, coreName)
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "MFA_ENCRYPTION_KEYS_FILE" })
		}, "MFA_ENCRYPTION_KEYS_FILE"},
		{"coreapi without API_KEY_PEPPER_FILE", func(t *testing.T, b *bundle) {
			c := ctr(t, b, coreName)
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "API_KEY_PEPPER_FILE" })
		}, "API_KEY_PEPPER_FILE"},
		{"proxy mounts the API-key pepper", func(t *testing.T, b *bundle) {
			c := ctr(t, b, proxyName)
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "api-key-pepper", MountPath: "/pepper"})
		}, "API-key pepper"},
		{"proxy mounts the MFA keys", func(t *testing.T, b *bundle) {
			c := ctr(t, b, proxyName)
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "mfa-keys", MountPath: "/mfa"})
		}, "MFA keys"},
		{"MFA keys in the identity key's Secret", func(t *testing.T, b *bundle) {
			setEnv(ctr(t, b, coreName), "MFA_ENCRYPTION_KEYS_FILE", "/var/run/secrets/tollgate/identity/mfa.keys")
		}, "MFA keys"},
		{"replicas fixed next to an HPA", func(t *testing.T, b *bundle) {
			b.Deployments[0].Spec.Replicas = new(int32(3))
		}, "replicas"},
		{"HPA targets nothing", func(t *testing.T, b *bundle) {
			b.HPAs[0].Spec.ScaleTargetRef.Name = "other"
		}, "no HorizontalPodAutoscaler"},
		{"PDB selects nothing", func(t *testing.T, b *bundle) {
			b.PDBs[0].Spec.Selector.MatchLabels = map[string]string{"app": "other"}
		}, "no PodDisruptionBudget"},
		{"PDB blocks every drain", func(t *testing.T, b *bundle) {
			b.PDBs[0].Spec.MaxUnavailable = new(intstr.FromInt32(0))
		}, "allows no eviction at 2 pods"},
		{"PDB's minAvailable is the HPA's minimum", func(t *testing.T, b *bundle) {
			b.PDBs[0].Spec.MaxUnavailable = nil
			b.PDBs[0].Spec.MinAvailable = new(intstr.FromInt32(2))
		}, "allows no eviction at 2 pods"},
		{"PDB's minAvailable a percentage that rounds up to every pod", func(t *testing.T, b *bundle) {
			b.PDBs[0].Spec.MaxUnavailable = nil
			b.PDBs[0].Spec.MinAvailable = new(intstr.FromString("60%"))
		}, "allows no eviction at 2 pods"},
		{"PDB protects nothing", func(t *testing.T, b *bundle) {
			b.PDBs[0].Spec.MaxUnavailable = new(intstr.FromString("100%"))
		}, "allows all 2 pods"},
		{"PDB sets both maxUnavailable and minAvailable", func(t *testing.T, b *bundle) {
			b.PDBs[0].Spec.MinAvailable = new(intstr.FromInt32(1))
		}, "PodDisruptionBudget tollgate: want exactly one of maxUnavailable and minAvailable"},
		{"PDB holds back unready pods", func(t *testing.T, b *bundle) {
			b.PDBs[0].Spec.UnhealthyPodEvictionPolicy = nil
		}, "unhealthyPodEvictionPolicy"},
		{"no spread over nodes", func(t *testing.T, b *bundle) {
			pod := &b.Deployments[0].Spec.Template.Spec
			pod.TopologySpreadConstraints = slices.DeleteFunc(pod.TopologySpreadConstraints, func(c corev1.TopologySpreadConstraint) bool {
				return c.TopologyKey == corev1.LabelHostname
			})
		}, "no topology spread over kubernetes.io/hostname"},
		{"spread over nodes by a required pod anti-affinity instead", func(t *testing.T, b *bundle) {
			spreadByAntiAffinity(b, corev1.LabelHostname, true)
		}, ""},
		{"spread over nodes by a preferred pod anti-affinity instead", func(t *testing.T, b *bundle) {
			spreadByAntiAffinity(b, corev1.LabelHostname, false)
		}, ""},
		{"pod anti-affinity over zones only", func(t *testing.T, b *bundle) {
			spreadByAntiAffinity(b, corev1.LabelTopologyZone, true)
		}, "no topology spread over kubernetes.io/hostname"},
		{"spread over nodes of other pods", func(t *testing.T, b *bundle) {
			for i := range b.Deployments[0].Spec.Template.Spec.TopologySpreadConstraints {
				b.Deployments[0].Spec.Template.Spec.TopologySpreadConstraints[i].LabelSelector.MatchLabels = map[string]string{"app": "other"}
			}
		}, "no topology spread"},
		{"spread counts the old revision's pods", func(t *testing.T, b *bundle) {
			b.Deployments[0].Spec.Template.Spec.TopologySpreadConstraints[0].MatchLabelKeys = nil
		}, "topology spread over kubernetes.io/hostname without matchLabelKeys [pod-template-hash]"},
		{"a failed migration's reason missing from the pod status", func(t *testing.T, b *bundle) {
			b.Deployments[0].Spec.Template.Spec.InitContainers[0].TerminationMessagePolicy = corev1.TerminationMessageReadFile
		}, "container migrate: terminationMessagePolicy is not FallbackToLogsOnError"},
		{"no fixed uid", func(t *testing.T, b *bundle) {
			b.Deployments[0].Spec.Template.Spec.SecurityContext.RunAsUser = nil
		}, "no fixed uid (runAsUser)"},
		{"no fixed gid", func(t *testing.T, b *bundle) {
			b.Deployments[0].Spec.Template.Spec.SecurityContext.RunAsGroup = nil
		}, "no fixed gid (runAsGroup)"},
		{"the migration runs as gid 0", func(t *testing.T, b *bundle) {
			b.Deployments[0].Spec.Template.Spec.InitContainers[0].SecurityContext.RunAsGroup = new(int64(0))
		}, "container migrate: runs as gid 0"},
		{"no migration before the pod serves", func(t *testing.T, b *bundle) {
			b.Deployments[0].Spec.Template.Spec.InitContainers = nil
		}, "migrate up"},
		{"migration with another image", func(t *testing.T, b *bundle) {
			b.Deployments[0].Spec.Template.Spec.InitContainers[0].Image = "tollgate/coreapi:old"
		}, "migrate up"},
		{"migration as a fixed-name Job only", func(t *testing.T, b *bundle) {
			init := b.Deployments[0].Spec.Template.Spec.InitContainers[0]
			b.Deployments[0].Spec.Template.Spec.InitContainers = nil
			b.Jobs = append(b.Jobs, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "tollgate-migrate"},
				Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{init}}}}})
		}, "migrate up"},
		{"migration without the database", func(t *testing.T, b *bundle) {
			b.Deployments[0].Spec.Template.Spec.InitContainers[0].Env = nil
		}, "DATABASE_URL"},
		{"missing ConfigMap", func(t *testing.T, b *bundle) {
			b.ConfigMaps = nil
		}, "missing ConfigMap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := base.deepCopy()
			tt.mutate(t, b)
			got := check(b)
			if tt.want == "" { // a sound alternative: nothing to catch
				if len(got) != 0 {
					t.Fatalf("check() = %q, want no violation", got)
				}
				return
			}
			for _, v := range got {
				if strings.Contains(v, tt.want) {
					return
				}
			}
			t.Fatalf("check() = %q, want a violation containing %q", got, tt.want)
		})
	}
}

// spreadByAntiAffinity replaces the Deployment's topology spread over nodes
// by a pod anti-affinity term on key selecting its pods, required or
// preferred.
func spreadByAntiAffinity(b *bundle, key string, required bool) {
	pod := &b.Deployments[0].Spec.Template.Spec
	pod.TopologySpreadConstraints = slices.DeleteFunc(pod.TopologySpreadConstraints, func(c corev1.TopologySpreadConstraint) bool {
		return c.TopologyKey == corev1.LabelHostname
	})
	term := corev1.PodAffinityTerm{
		TopologyKey:   key,
		LabelSelector: &metav1.LabelSelector{MatchLabels: b.Deployments[0].Spec.Template.Labels},
	}
	anti := &corev1.PodAntiAffinity{}
	if required {
		anti.RequiredDuringSchedulingIgnoredDuringExecution = []corev1.PodAffinityTerm{term}
	} else {
		anti.PreferredDuringSchedulingIgnoredDuringExecution = []corev1.WeightedPodAffinityTerm{{Weight: 100, PodAffinityTerm: term}}
	}
	pod.Affinity = &corev1.Affinity{PodAntiAffinity: anti}
}

// TestBadShutdownTimeoutReportedOnce: the proxy's SHUTDOWN_TIMEOUT feeds
// both its drain before coreapi stops and its whole stop; a bad value is
// one violation.
func TestBadShutdownTimeoutReportedOnce(t *testing.T) {
	b := renderBase(t)
	setEnv(ctr(t, b, proxyName), "SHUTDOWN_TIMEOUT", "soon")
	want := `authproxy: SHUTDOWN_TIMEOUT "soon" is not a positive duration`
	got := check(b)
	if n := slices.Index(got, want); n < 0 || slices.Contains(got[n+1:], want) {
		t.Fatalf("check() = %q, want %q exactly once", got, want)
	}
}

// TestHealthzProbesInOrder: both probes off /healthz are reported, liveness
// first, the same way on every run.
func TestHealthzProbesInOrder(t *testing.T) {
	c := ctr(t, renderBase(t), coreName)
	c.LivenessProbe.HTTPGet.Path = "/readyz"
	c.StartupProbe.HTTPGet.Path = "/ready"
	want := []string{
		"coreapi: liveness probe on /readyz, not /healthz: why",
		"coreapi: startup probe on /ready, not /healthz: why",
	}
	for range 20 {
		var v violations
		checkHealthzProbes(&v, c, "coreapi", "why")
		if !slices.Equal(v, want) {
			t.Fatalf("checkHealthzProbes() = %q, want %q", v, want)
		}
	}
}

// TestOverlayBreakageIsCaught renders an overlay that patches the base the
// way a careless change would, through kustomize itself, and expects the
// invariants to reject it.
func TestOverlayBreakageIsCaught(t *testing.T) {
	fsys := filesys.MakeFsInMemory()
	copyBase(t, fsys, "/k/base")
	overlay := `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../base]
patches:
  - target: {kind: Service, name: tollgate}
    patch: |
      - op: replace
        path: /spec/ports/0/targetPort
        value: 8081
  - patch: |
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: tollgate}
      spec:
        template:
          spec:
            containers:
              - name: coreapi
                env:
                  - {name: COREAPI_LISTEN_ADDR, value: "0.0.0.0:8081"}
`
	if err := fsys.WriteFile("/k/broken/kustomization.yaml", []byte(overlay)); err != nil {
		t.Fatal(err)
	}
	b, err := render(fsys, "/k/broken")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(check(b), "\n")
	for _, want := range []string{"targets", "not loopback"} {
		if !strings.Contains(got, want) {
			t.Errorf("violations of the broken overlay:\n%s\nwant one containing %q", got, want)
		}
	}
}

func ctr(t *testing.T, b *bundle, name string) *corev1.Container {
	t.Helper()
	for i := range b.Deployments[0].Spec.Template.Spec.Containers {
		if c := &b.Deployments[0].Spec.Template.Spec.Containers[i]; c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

func setEnv(c *corev1.Container, name, value string) {
	for i := range c.Env {
		if c.Env[i].Name == name {
			c.Env[i] = corev1.EnvVar{Name: name, Value: value}
			return
		}
	}
	c.Env = append(c.Env, corev1.EnvVar{Name: name, Value: value})
}

// --- invariants ---

type violations []string

func (v *violations) addf(format string, a ...any) { *v = append(*v, fmt.Sprintf(format, a...)) }

// check returns every invariant the bundle breaks; none means it is sound.
func check(b *bundle) []string {
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
	pod := &dep.Spec.Template.Spec
	podLabels := labels.Set(dep.Spec.Template.Labels)
	var proxy, core *corev1.Container
	var names []string
	for i := range pod.Containers {
		c := &pod.Containers[i]
		names = append(names, c.Name)
		switch c.Name {
		case proxyName:
			proxy = c
		case coreName:
			core = c
		}
	}
	if len(pod.Containers) != 2 || proxy == nil || core == nil {
		v.addf("Deployment %s: containers %v, want exactly %s and %s", dep.Name, names, proxyName, coreName)
		return v
	}
	if sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector); err != nil || !sel.Matches(podLabels) {
		v.addf("Deployment %s: selector does not match its pod template", dep.Name)
	}

	proxyEnv := b.env(&v, proxy)
	coreEnv := b.env(&v, core)
	proxyHost, proxyPort := addr(&v, proxyEnv, "PROXY_LISTEN_ADDR")
	proxyAdminHost, proxyAdmin := addr(&v, proxyEnv, "PROXY_ADMIN_ADDR")
	coreHost, corePort := addr(&v, coreEnv, "COREAPI_LISTEN_ADDR")
	coreAdminHost, coreAdmin := addr(&v, coreEnv, "COREAPI_ADMIN_ADDR")

	// Shutdown order: coreapi keeps serving until the proxy has drained
	// (its pause, then up to its SHUTDOWN_TIMEOUT) and sent its last
	// API-key usage report; the grace period covers each container's
	// whole stop, the steps after the drain included.
	proxyPause, corePause := preStopSleep(proxy), preStopSleep(core)
	proxyDrain := shutdownTimeout(&v, proxyName, proxyEnv, serviceDrain)
	if corePause < proxyPause+proxyDrain+usageReport {
		v.addf("coreapi's preStop pause (%s) ends before the proxy's pause (%s), its drain (SHUTDOWN_TIMEOUT %s) and its last usage report (%s): forwarded requests would find coreapi gone", corePause, proxyPause, proxyDrain, usageReport)
	}
	grace := gracePeriod(pod)
	if stop, steps := coreStop(&v, core, coreEnv); grace <= stop {
		v.addf("terminationGracePeriodSeconds (%s) does not exceed coreapi's shutdown (%s: %s)", grace, stop, steps)
	}
	if stop, steps := proxyStop(proxy, proxyEnv, proxyDrain); grace <= stop {
		v.addf("terminationGracePeriodSeconds (%s) does not exceed authproxy's shutdown (%s: %s)", grace, stop, steps)
	}

	// coreapi's database pool (DB_MAX_CONNS unset: 4 × GOMAXPROCS, at
	// least 8) and its password hashes at once (argon2id, 19 MiB each:
	// GOMAXPROCS of them) follow GOMAXPROCS, which the Go runtime takes
	// from the CPU limit or, without one, from the node's CPU count: on a
	// 32-CPU node that is 128 connections a replica and 608 MiB of hashes
	// in a 640Mi container. The manifest must fix it.
	if _, err := coreProcs(core, coreEnv); err != nil {
		v.addf("coreapi: %v", err)
	}
	checkProxyProcs(&v, proxy, proxyEnv, "authproxy")
	checkScratch(&v, pod, "Deployment "+dep.Name)

	// The proxy is the pod's way in: the Service reaches it on the pod IP
	// (its default listener is loopback, so the manifest must set it).
	if isLoopback(proxyHost) {
		v.addf("authproxy: PROXY_LISTEN_ADDR host %q is loopback: the Service cannot reach it (set :%d)", proxyHost, proxyPort)
	}
	// coreapi is reachable only from inside the pod.
	if !isLoopback(coreHost) {
		v.addf("coreapi: COREAPI_LISTEN_ADDR host %q is not loopback", coreHost)
	}
	if pod.HostNetwork {
		v.addf("pod: hostNetwork puts loopback on the node; coreapi would be shared with every host process")
	}
	for _, p := range core.Ports {
		if p.ContainerPort == corePort {
			v.addf("coreapi: declares its API port %d as a containerPort", corePort)
		}
	}
	for _, c := range pod.Containers {
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				v.addf("%s: hostPort %d bypasses the Service and the NetworkPolicy", c.Name, p.HostPort)
			}
		}
	}
	if httpPort, ok := namedPort(proxy, "http"); !ok || httpPort != proxyPort {
		v.addf("authproxy: containerPort named http = %d, want PROXY_LISTEN_ADDR port %d", httpPort, proxyPort)
	}
	if u, err := url.Parse(proxyEnv["IDENTITY_URL"]); err != nil || !isLoopback(u.Hostname()) || u.Port() != fmt.Sprint(corePort) {
		v.addf("authproxy: IDENTITY_URL %q is not coreapi's loopback address 127.0.0.1:%d", proxyEnv["IDENTITY_URL"], corePort)
	}
	if _, set := proxyEnv["UPSTREAM_URL"]; set {
		v.addf("authproxy: UPSTREAM_URL is deprecated (every start warns); set IDENTITY_URL")
	}
	if proxyAdmin == proxyPort || coreAdmin == corePort || coreAdmin == proxyPort {
		v.addf("pod: admin ports (%d, %d) must differ from the API ports (%d, %d)", proxyAdmin, coreAdmin, proxyPort, corePort)
	}

	// The Service reaches the proxy port and nothing else.
	selected := 0
	for _, s := range b.Services {
		if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
			continue
		}
		selected++
		for _, sp := range s.Spec.Ports {
			tp := sp.TargetPort
			if tp.Type == intstr.Int && tp.IntVal == 0 {
				tp = intstr.FromInt32(sp.Port)
			}
			owner, num := resolvePort(pod, tp)
			switch {
			case owner == coreName || num == corePort || num == coreAdmin:
				v.addf("Service %s port %s targets coreapi (%s)", s.Name, sp.Name, tp.String())
			case owner != proxyName || num != proxyPort:
				v.addf("Service %s port %s targets %s, not the proxy port %d", s.Name, sp.Name, tp.String(), proxyPort)
			}
		}
	}
	if selected == 0 {
		v.addf("no Service selects the pod")
	}

	// Probes hit the admin ports.
	checkProbes(&v, proxy, proxyAdmin, proxyAdminHost)
	checkProbes(&v, core, coreAdmin, coreAdminHost)
	// coreapi starts without its database and waits for it, /readyz
	// reporting the outage; but the kubelet kills a container whose startup
	// or liveness probe keeps failing. On /readyz (which pings the
	// database), a coreapi restarted during an outage would be killed
	// again every few minutes, then wait out its crash-loop back-off once
	// the database is back.
	checkHealthzProbes(&v, core, "coreapi", "the kubelet would kill coreapi during a database outage")
	// The proxy's readiness needs the key set from the coreapi beside it.
	// A proxy (re)started while that coreapi cannot serve (starting, or
	// in its own crash-loop back-off) would be killed by a startup or
	// liveness probe on /readyz, and then backed off for minutes after
	// coreapi is back.
	checkHealthzProbes(&v, proxy, "authproxy", "the kubelet would kill the proxy while coreapi cannot serve its key set")
	// Readiness asks /readyz: /healthz answers while coreapi cannot reach
	// its database, and while the proxy has no key set to verify with.
	for _, c := range []*corev1.Container{proxy, core} {
		if p := c.ReadinessProbe; p != nil {
			what := "a non-HTTP check"
			if p.HTTPGet != nil {
				what = p.HTTPGet.Path
			}
			if what != "/readyz" {
				v.addf("%s: readiness probe on %s, not /readyz: the pod would take traffic it cannot serve", c.Name, what)
			}
		}
	}

	// The kubelet's wait on coreapi's readiness outlasts /readyz's own
	// on the database.
	checkCoreReadyTimeout(&v, core)

	// Secrets: never in ConfigMaps or literal env values.
	for _, cm := range b.ConfigMaps {
		for k, val := range cm.Data {
			if secretKey(k) {
				v.addf("ConfigMap %s: secret-looking key %s", cm.Name, k)
			}
			if secretValue(val) {
				v.addf("ConfigMap %s: secret-looking value under %s", cm.Name, k)
			}
		}
	}
	templates := map[string]*corev1.PodTemplateSpec{"Deployment/" + dep.Name: &dep.Spec.Template}
	for _, j := range b.Jobs {
		templates["Job/"+j.Name] = &j.Spec.Template
	}
	for owner, tpl := range templates {
		checkPod(&v, b, owner, &tpl.Spec)
	}

	// Key material: the core key file for both, signing keys for coreapi only.
	coreKeyDir := ""
	for _, c := range []*corev1.Container{proxy, core} {
		env := proxyEnv
		if c == core {
			env = coreEnv
		}
		name, f := coreKeyFile(&v, c.Name, env)
		if name != "" && (f == "" || !secretMounted(pod, c, path.Dir(f))) {
			v.addf("%s: %s %q is not inside a mounted Secret", c.Name, name, f)
		}
		if c == core && f != "" {
			coreKeyDir = path.Dir(f)
		}
	}
	if d := coreEnv["SIGNING_KEYS_DIR"]; d == "" || !secretMounted(pod, core, d) {
		v.addf("coreapi: SIGNING_KEYS_DIR %q is not a mounted Secret", coreEnv["SIGNING_KEYS_DIR"])
	}
	// The MFA keys, the API-key pepper and the database's and the mail
	// server's URLs (with their passwords): each a Secret of its own,
	// mounted into coreapi only.
	coreOnly := []struct{ env, what, missing string }{
		{"MFA_ENCRYPTION_KEYS_FILE", "the MFA keys", "MFA would answer 503"},
		{"API_KEY_PEPPER_FILE", "the API-key pepper", "API keys would answer 503"},
		{"DATABASE_URL_FILE", "the database URL", "coreapi would not start"},
		{"SMTP_URL_FILE", "the mail server's URL", "coreapi would not start rather than log the mailed links"},
	}
	for _, own := range coreOnly {
		file := coreEnv[own.env]
		if file == "" || !secretMounted(pod, core, path.Dir(file)) {
			v.addf("coreapi: %s %q is not inside a mounted Secret (%s)", own.env, file, own.missing)
		}
		volumes := map[string]bool{}
		for _, m := range core.VolumeMounts {
			if file != "" && (path.Dir(file) == m.MountPath || strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")) {
				volumes[m.Name] = true
			}
		}
		others := map[string]bool{coreKeyDir: true, coreEnv["SIGNING_KEYS_DIR"]: true}
		for _, o := range coreOnly {
			if o.env != own.env && coreEnv[o.env] != "" {
				others[path.Dir(coreEnv[o.env])] = true
			}
		}
		for _, m := range core.VolumeMounts {
			if volumes[m.Name] && others[m.MountPath] {
				v.addf("coreapi: %s share volume %s with other key material; they need a Secret of their own", own.what, m.Name)
			}
		}
		for _, m := range proxy.VolumeMounts {
			if volumes[m.Name] {
				v.addf("authproxy: mounts %s (volume %s); they belong to coreapi only", own.what, m.Name)
			}
		}
		base := strings.TrimSuffix(own.env, "_FILE")
		if proxyEnv[base] != "" || proxyEnv[own.env] != "" {
			v.addf("authproxy: has %s in its environment; they belong to coreapi only", own.what)
		}
	}
	signingVolumes := map[string]bool{}
	for _, m := range core.VolumeMounts {
		if m.MountPath == coreEnv["SIGNING_KEYS_DIR"] {
			signingVolumes[m.Name] = true
		}
	}
	for _, m := range proxy.VolumeMounts {
		if signingVolumes[m.Name] {
			v.addf("authproxy: mounts the signing keys (volume %s); private keys belong to coreapi only", m.Name)
		}
	}

	// NetworkPolicy: the proxy port from anywhere; admin ports only from
	// selected namespaces/pods; nothing else.
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
				if p.EndPort != nil {
					v.addf("NetworkPolicy %s rule %d: admits a port range", np.Name, i)
				}
				if p.Port == nil {
					v.addf("NetworkPolicy %s rule %d: a port entry without a port admits every port", np.Name, i)
					continue
				}
				_, num := resolvePort(pod, *p.Port)
				switch {
				case num == corePort:
					v.addf("NetworkPolicy %s rule %d: admits coreapi's API port %d", np.Name, i, num)
				case num == proxyPort:
				case num == proxyAdmin || num == coreAdmin:
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
		v.addf("no NetworkPolicy restricts ingress to the pod")
	}

	// Availability objects point at this workload: an HPA, and a PDB even
	// at one replica.
	_, hpas, pdbs := checkAvailability(&v, b, dep)
	if pdbs == 0 {
		v.addf("no PodDisruptionBudget selects the pod")
	}
	if hpas == 0 {
		v.addf("no HorizontalPodAutoscaler targets Deployment %s", dep.Name)
	} else if dep.Spec.Replicas != nil {
		v.addf("Deployment %s: sets replicas although an HPA owns the count (every apply would reset it)", dep.Name)
	}

	// Migrations run before a new pod serves: an init container of the
	// pod runs `coreapi migrate up` (under an advisory lock) with the same
	// coreapi image. A Job with a fixed name does not do: its template is
	// immutable, so it is never re-run for a new release by itself.
	migrates := false
	for _, c := range pod.InitContainers {
		if c.Image != core.Image || !slices.Equal(c.Args, []string{"migrate", "up"}) {
			continue
		}
		migrates = true
		if f := b.env(&v, &c)["DATABASE_URL_FILE"]; f == "" || !secretMounted(pod, &c, path.Dir(f)) {
			v.addf("init container %s: runs `coreapi migrate up` without DATABASE_URL_FILE in a mounted Secret", c.Name)
		}
	}
	if !migrates {
		v.addf("Deployment %s: no init container runs `coreapi migrate up` with image %s before the pod serves", dep.Name, core.Image)
	}
	return v
}

// checkAvailability checks the availability of d's pods at the fewest
// replicas d runs (its replicas, or the minimum of an HPA targeting it):
// every PodDisruptionBudget selecting the pods passes checkPDB, and more
// than one replica spread over nodes. It returns that count, the number of
// HPAs targeting d and the number of PDBs selecting its pods.
func checkAvailability(v *violations, b *bundle, d *appsv1.Deployment) (minPods int32, hpas, pdbs int) {
	pod := &d.Spec.Template.Spec
	podLabels := labels.Set(d.Spec.Template.Labels)
	minPods = 1
	if d.Spec.Replicas != nil {
		minPods = *d.Spec.Replicas
	}
	for _, h := range b.HPAs {
		if h.Spec.ScaleTargetRef.Kind == "Deployment" && h.Spec.ScaleTargetRef.Name == d.Name {
			hpas++
			minPods = 1
			if h.Spec.MinReplicas != nil {
				minPods = *h.Spec.MinReplicas
			}
		}
	}
	for _, p := range b.PDBs {
		if sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector); err == nil && sel.Matches(podLabels) {
			pdbs++
			if err := checkPDB(p, int(minPods)); err != nil {
				v.addf("PodDisruptionBudget %s: %v", p.Name, err)
			}
		}
	}
	if minPods > 1 && !spreadOverNodes(pod, podLabels) {
		v.addf("Deployment %s: no topology spread over %s selecting its pods: its %d replicas may share a node, and that node's loss or drain takes them all", d.Name, corev1.LabelHostname, minPods)
	}
	// Without the revision's pod-template-hash among its keys, a
	// constraint counts the old ReplicaSet's pods with the new one's
	// during a rollout, and the scheduler packs the new pods where the
	// old ones leave room, often on one node, so the spread holds only
	// until the old pods are gone.
	for _, c := range pod.TopologySpreadConstraints {
		if !slices.Contains(c.MatchLabelKeys, appsv1.DefaultDeploymentUniqueLabelKey) {
			v.addf("Deployment %s: topology spread over %s without matchLabelKeys [%s]: a rollout spreads old and new pods together, not the new ones", d.Name, c.TopologyKey, appsv1.DefaultDeploymentUniqueLabelKey)
		}
	}
	return minPods, hpas, pdbs
}

// checkPDB: at n replicas (the HPA's minimum) the budget lets a node
// drain evict one pod and never all of them, and it lets the drain evict
// unready pods: during a database outage every pod is unready at once,
// and with the default policy (IfHealthyBudget) no drain would go on.
func checkPDB(p *policyv1.PodDisruptionBudget, n int) error {
	if p.Spec.UnhealthyPodEvictionPolicy == nil || *p.Spec.UnhealthyPodEvictionPolicy != policyv1.AlwaysAllow {
		return errors.New("unhealthyPodEvictionPolicy is not AlwaysAllow: while every pod is unready (a database outage) no node drain could evict one")
	}
	if n < 2 {
		return nil
	}
	var allowed int
	switch {
	case p.Spec.MaxUnavailable != nil && p.Spec.MinAvailable == nil:
		m, err := intstr.GetScaledValueFromIntOrPercent(p.Spec.MaxUnavailable, n, true)
		if err != nil {
			return fmt.Errorf("maxUnavailable: %v", err)
		}
		allowed = m
	case p.Spec.MinAvailable != nil && p.Spec.MaxUnavailable == nil:
		m, err := intstr.GetScaledValueFromIntOrPercent(p.Spec.MinAvailable, n, true)
		if err != nil {
			return fmt.Errorf("minAvailable: %v", err)
		}
		allowed = n - m
	default:
		return errors.New("want exactly one of maxUnavailable and minAvailable")
	}
	if allowed < 1 {
		return fmt.Errorf("allows no eviction at %d pods: every node drain would block", n)
	}
	if allowed >= n {
		return fmt.Errorf("allows all %d pods to be evicted at once", n)
	}
	return nil
}

// spreadOverNodes reports whether the pod's replicas are spread over nodes:
// a topology spread constraint, or a pod anti-affinity term, on the
// hostname label that selects them.
func spreadOverNodes(pod *corev1.PodSpec, podLabels labels.Set) bool {
	selects := func(ls *metav1.LabelSelector) bool {
		sel, err := metav1.LabelSelectorAsSelector(ls)
		return ls != nil && err == nil && !sel.Empty() && sel.Matches(podLabels)
	}
	for _, c := range pod.TopologySpreadConstraints {
		if c.TopologyKey == corev1.LabelHostname && c.MaxSkew >= 1 && selects(c.LabelSelector) {
			return true
		}
	}
	if a := pod.Affinity; a != nil && a.PodAntiAffinity != nil {
		for _, t := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			if t.TopologyKey == corev1.LabelHostname && selects(t.LabelSelector) {
				return true
			}
		}
		for _, w := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			if w.PodAffinityTerm.TopologyKey == corev1.LabelHostname && selects(w.PodAffinityTerm.LabelSelector) {
				return true
			}
		}
	}
	return false
}

// procsOf is a container's GOMAXPROCS as the manifest fixes it: the
// GOMAXPROCS variable, else the CPU limit rounded up (at least 2, as the Go
// runtime does). ok is false when neither is set: the Go runtime then takes
// the node's CPU count.
func procsOf(c *corev1.Container, env map[string]string) (n int, ok bool, err error) {
	if s, set := env["GOMAXPROCS"]; set {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return 0, true, fmt.Errorf("GOMAXPROCS %q is not a positive number", s)
		}
		return n, true, nil
	}
	if q, set := c.Resources.Limits[corev1.ResourceCPU]; set {
		return max(int((q.MilliValue()+999)/1000), 2), true, nil
	}
	return 0, false, nil
}

// coreProcs is coreapi's GOMAXPROCS as the manifest fixes it.
func coreProcs(c *corev1.Container, env map[string]string) (int, error) {
	n, ok, err := procsOf(c, env)
	if err == nil && !ok {
		err = errors.New("neither GOMAXPROCS nor a cpu limit is set: the database pool (4 × GOMAXPROCS) and the password hashes run at once (19 MiB each) grow with the node's CPU count")
	}
	return n, err
}

// checkProxyProcs: authproxy's parallelism is fixed too. Without
// GOMAXPROCS or a cpu limit it takes the node's CPU count: on a 64-CPU node
// its garbage collector alone runs 16 workers at once, in bursts taken
// from the app and coreapi beside it in the pod, and the memory limit was
// measured with two. Sidecar proxies conventionally run with 2 (Istio's
// proxy concurrency).
func checkProxyProcs(v *violations, c *corev1.Container, env map[string]string, who string) {
	if _, ok, err := procsOf(c, env); err != nil {
		v.addf("%s: %v", who, err)
	} else if !ok {
		v.addf("%s: neither GOMAXPROCS nor a cpu limit is set: its parallelism (garbage collector workers included) follows the node's CPU count, not the memory limit measured with 2", who)
	}
}

// checkScratch: a writable scratch volume (emptyDir) belongs to one
// container. Shared, what one process writes under /tmp the other reads
// or replaces, and one container's use fills the other's space.
func checkScratch(v *violations, pod *corev1.PodSpec, who string) {
	for _, vol := range pod.Volumes {
		if vol.EmptyDir == nil {
			continue
		}
		var users []string
		for _, c := range allContainers(pod) {
			if slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == vol.Name && !m.ReadOnly }) {
				users = append(users, c.Name)
			}
		}
		if len(users) > 1 {
			v.addf("%s: emptyDir %s is written by %s: give each container its own", who, vol.Name, strings.Join(users, " and "))
		}
	}
}

// corePool is the size of one coreapi replica's database pool.
func corePool(b *bundle) (int, error) {
	var v violations
	var core *corev1.Container
	for _, d := range b.Deployments {
		for i := range d.Spec.Template.Spec.Containers {
			if c := &d.Spec.Template.Spec.Containers[i]; d.Name == deploymentName && c.Name == coreName {
				core = c
			}
		}
	}
	if core == nil {
		return 0, errors.New("no coreapi container")
	}
	env := b.env(&v, core)
	if s, ok := env["DB_MAX_CONNS"]; ok {
		return strconv.Atoi(s)
	}
	procs, err := coreProcs(core, env)
	if err != nil {
		return 0, err
	}
	return max(4*procs, 8), nil
}

// documentedConnections matches docs/operations.md's count of the
// database connections at the HPA's maximum ("at 20 pods × (8 + 2) that
// is 200").
var documentedConnections = regexp.MustCompile(`at (\d+) pods × \((\d+) \+ (\d+)\)\s+that is (\d+)`)

// checkConnectionsDoc compares that count with the rendered base: the
// HPA's maxReplicas and coreapi's pool.
func checkConnectionsDoc(b *bundle, doc []byte) error {
	m := documentedConnections.FindSubmatch(doc)
	if m == nil {
		return errors.New(`docs/operations.md no longer says "at N pods × (POOL + 2) that is TOTAL"`)
	}
	n := make([]int, 4)
	for i := range n {
		n[i], _ = strconv.Atoi(string(m[i+1]))
	}
	pool, err := corePool(b)
	if err != nil {
		return err
	}
	if len(b.HPAs) != 1 {
		return fmt.Errorf("%d HPAs, want 1", len(b.HPAs))
	}
	maxPods := int(b.HPAs[0].Spec.MaxReplicas)
	if n[0] != maxPods || n[1] != pool || n[3] != n[0]*(n[1]+n[2]) {
		return fmt.Errorf("docs/operations.md counts %s database connections; the base opens up to %d pods × (%d + %d) = %d", m[0], maxPods, pool, n[2], maxPods*(pool+n[2]))
	}
	return nil
}

// scalingConnections matches docs/scaling.md's formula ("connections =
// coreapi replicas × (DB_MAX_CONNS + 2)") and its count at the HPA's
// maximum ("open up to 200 connections").
var (
	scalingFormula = regexp.MustCompile(`connections = coreapi replicas × \(DB_MAX_CONNS \+ (\d+)\)`)
	scalingTotal   = regexp.MustCompile(`open up to (\d+) connections`)
)

// checkScalingDoc compares docs/scaling.md's count of the database
// connections with docs/operations.md's (ops): the same connections of
// each replica's own beside its pool, and the same total at the base's
// HPA maximum.
func checkScalingDoc(b *bundle, ops, scaling []byte) error {
	if err := checkConnectionsDoc(b, ops); err != nil {
		return err
	}
	own, _ := strconv.Atoi(string(documentedConnections.FindSubmatch(ops)[3]))
	f, total := scalingFormula.FindSubmatch(scaling), scalingTotal.FindSubmatch(scaling)
	if f == nil || total == nil {
		return errors.New(`docs/scaling.md no longer says "connections = coreapi replicas × (DB_MAX_CONNS + N)" and "open up to TOTAL connections"`)
	}
	pool, err := corePool(b)
	if err != nil {
		return err
	}
	maxPods := int(b.HPAs[0].Spec.MaxReplicas)
	n, _ := strconv.Atoi(string(f[1]))
	sum, _ := strconv.Atoi(string(total[1]))
	if n != own || sum != maxPods*(pool+own) {
		return fmt.Errorf("docs/scaling.md counts DB_MAX_CONNS + %d a replica, %d in all; docs/operations.md and the base: %d pods × (%d + %d) = %d", n, sum, maxPods, pool, own, maxPods*(pool+own))
	}
	return nil
}

// TestScalingDocCountsTheSameConnections: docs/scaling.md, from which
// PostgreSQL's max_connections is sized too, counts each replica's
// connections outside its pool (the outbox relay's LISTEN and the
// readiness probe's) as docs/operations.md does.
func TestScalingDocCountsTheSameConnections(t *testing.T) {
	ops, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	scaling, err := os.ReadFile(filepath.Join("..", "..", "docs", "scaling.md"))
	if err != nil {
		t.Fatal(err)
	}
	base := renderBase(t)
	if err := checkScalingDoc(base, ops, scaling); err != nil {
		t.Error(err)
	}
	for name, doc := range map[string]string{
		"one connection of its own": "connections = coreapi replicas × (DB_MAX_CONNS + 1)\n20 replicas open up to 180 connections",
		"a wrong total":             "connections = coreapi replicas × (DB_MAX_CONNS + 2)\n20 replicas open up to 180 connections",
		"no formula":                "20 replicas open up to 200 connections",
	} {
		if err := checkScalingDoc(base, ops, []byte(doc)); err == nil {
			t.Errorf("%s: checkScalingDoc accepted it", name)
		}
	}
}

// TestDatabaseConnectionsAsDocumented: the connections the base opens at
// the HPA's maximum are the ones docs/operations.md counts (PostgreSQL's
// max_connections is sized from it).
func TestDatabaseConnectionsAsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	base := renderBase(t)
	if err := checkConnectionsDoc(base, doc); err != nil {
		t.Error(err)
	}
	for name, mutate := range map[string]func(*bundle){
		"a larger GOMAXPROCS": func(b *bundle) { setEnv(ctr(t, b, coreName), "GOMAXPROCS", "16") },
		"a larger pool":       func(b *bundle) { setEnv(ctr(t, b, coreName), "DB_MAX_CONNS", "32") },
		"more pods":           func(b *bundle) { b.HPAs[0].Spec.MaxReplicas = 40 },
		"a cpu limit of 8": func(b *bundle) {
			c := ctr(t, b, coreName)
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMAXPROCS" })
			c.Resources.Limits[corev1.ResourceCPU] = resource.MustParse("8")
		},
	} {
		t.Run(name, func(t *testing.T) {
			b := base.deepCopy()
			mutate(b)
			if err := checkConnectionsDoc(b, doc); err == nil {
				t.Fatal("checkConnectionsDoc accepted it")
			}
		})
	}
}

// env resolves a container's environment from its ConfigMap references and
// literal values; secret references resolve to "<secret>".
func (b *bundle) env(v *violations, c *corev1.Container) map[string]string {
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			continue
		}
		var cm *corev1.ConfigMap
		for _, m := range b.ConfigMaps {
			if m.Name == ef.ConfigMapRef.Name {
				cm = m
			}
		}
		if cm == nil {
			v.addf("%s: envFrom references missing ConfigMap %s", c.Name, ef.ConfigMapRef.Name)
			continue
		}
		for k, val := range cm.Data {
			env[ef.Prefix+k] = val
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			env[e.Name] = "<secret>"
			continue
		}
		env[e.Name] = e.Value
	}
	return env
}

// addr parses a listen address from env (or its default) into host and port.
func addr(v *violations, env map[string]string, name string) (string, int32) {
	s, ok := env[name]
	if !ok {
		s = defaultAddr[name]
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		v.addf("%s=%q: %v", name, s, err)
		return "", 0
	}
	var n int32
	if _, err := fmt.Sscan(port, &n); err != nil || n <= 0 {
		v.addf("%s=%q: bad port", name, s)
	}
	return host, n
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func namedPort(c *corev1.Container, name string) (int32, bool) {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

// resolvePort maps a port (number or name) to the container that declares
// it and its number. A number no container declares resolves to ("", n).
func resolvePort(pod *corev1.PodSpec, p intstr.IntOrString) (string, int32) {
	for _, c := range pod.Containers {
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

func checkProbes(v *violations, c *corev1.Container, admin int32, adminHost string) {
	if c.LivenessProbe == nil {
		v.addf("%s: no liveness probe", c.Name)
	}
	if c.ReadinessProbe == nil {
		v.addf("%s: no readiness probe", c.Name)
	}
	for kind, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
		if p == nil {
			continue
		}
		var port *intstr.IntOrString
		switch {
		case p.HTTPGet != nil:
			port = &p.HTTPGet.Port
		case p.TCPSocket != nil:
			port = &p.TCPSocket.Port
		case p.GRPC != nil:
			port = new(intstr.FromInt32(p.GRPC.Port))
		case p.Exec != nil:
			continue // runs inside the container; reaches loopback
		}
		if port == nil {
			v.addf("%s: %s probe has no handler", c.Name, kind)
			continue
		}
		num := port.IntVal
		if port.Type == intstr.String {
			var ok bool
			if num, ok = namedPort(c, port.StrVal); !ok {
				v.addf("%s: %s probe port %q is not declared by the container", c.Name, kind, port.StrVal)
				continue
			}
		}
		if num != admin {
			v.addf("%s: %s probe targets port %d, not its admin port %d", c.Name, kind, num, admin)
		}
		if isLoopback(adminHost) {
			v.addf("%s: %s probe comes from the kubelet and cannot reach an admin port bound to %s", c.Name, kind, adminHost)
		}
	}
}

// checkHealthzProbes reports c's liveness and startup probes that ask
// anything but /healthz: a probe that waits on another service has the
// kubelet kill c while that service is away (why says what follows).
func checkHealthzProbes(v *violations, c *corev1.Container, who, why string) {
	for _, p := range []struct {
		kind  string
		probe *corev1.Probe
	}{{"liveness", c.LivenessProbe}, {"startup", c.StartupProbe}} {
		if g := p.probe; g != nil && g.HTTPGet != nil && g.HTTPGet.Path != "/healthz" {
			v.addf("%s: %s probe on %s, not /healthz: %s", who, p.kind, g.HTTPGet.Path, why)
		}
	}
}

func checkPod(v *violations, b *bundle, owner string, pod *corev1.PodSpec) {
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		v.addf("%s: shares host namespaces", owner)
	}
	automount := pod.AutomountServiceAccountToken
	if automount == nil {
		for _, sa := range b.ServiceAccounts {
			if sa.Name == pod.ServiceAccountName {
				automount = sa.AutomountServiceAccountToken
			}
		}
	}
	if automount == nil || *automount {
		v.addf("%s: the service account token is mounted; the pod never calls the API server", owner)
	}
	// The volume types the "restricted" Pod Security Standard allows that
	// this pod has any use for; hostPath above all is out.
	for _, vol := range pod.Volumes {
		if vol.Secret == nil && vol.ConfigMap == nil && vol.EmptyDir == nil && vol.Projected == nil && vol.DownwardAPI == nil {
			v.addf("%s: volume %s is not a secret, configMap, emptyDir, projected or downwardAPI volume", owner, vol.Name)
		}
	}
	psc := pod.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	all := append(slices.Clone(pod.InitContainers), pod.Containers...)
	for _, c := range all {
		name := owner + " container " + c.Name
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		nonRoot := sc.RunAsNonRoot
		if nonRoot == nil {
			nonRoot = psc.RunAsNonRoot
		}
		if nonRoot == nil || !*nonRoot {
			v.addf("%s: runAsNonRoot is not true", name)
		}
		// A fixed uid and gid, not the image's: the Secrets' mode 0440
		// with fsGroup assumes them, and runAsNonRoot alone lets an image
		// whose user is a name, or whose group is 0, decide.
		for _, id := range []struct {
			what, field string
			ctr, pod    *int64
		}{
			{"uid", "runAsUser", sc.RunAsUser, psc.RunAsUser},
			{"gid", "runAsGroup", sc.RunAsGroup, psc.RunAsGroup},
		} {
			n := id.ctr
			if n == nil {
				n = id.pod
			}
			switch {
			case n == nil:
				v.addf("%s: no fixed %s (%s): the image decides", name, id.what, id.field)
			case *n == 0:
				v.addf("%s: runs as %s 0", name, id.what)
			}
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			v.addf("%s: readOnlyRootFilesystem is not true", name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			v.addf("%s: allowPrivilegeEscalation is not false", name)
		}
		if sc.Privileged != nil && *sc.Privileged {
			v.addf("%s: privileged", name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			v.addf("%s: capabilities do not drop ALL", name)
		} else if len(sc.Capabilities.Add) > 0 {
			v.addf("%s: adds capabilities %v", name, sc.Capabilities.Add)
		}
		sp := sc.SeccompProfile
		if sp == nil {
			sp = psc.SeccompProfile
		}
		if sp == nil || (sp.Type != corev1.SeccompProfileTypeRuntimeDefault && sp.Type != corev1.SeccompProfileTypeLocalhost) {
			v.addf("%s: no RuntimeDefault seccomp profile", name)
		}
		if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
			v.addf("%s: no cpu request", name)
		}
		if _, ok := c.Resources.Requests[corev1.ResourceMemory]; !ok {
			v.addf("%s: no memory request", name)
		}
		if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
			v.addf("%s: no memory limit", name)
		}
		// A Go program reports why it stopped on stderr, never in
		// /dev/termination-log: without the fallback, `kubectl describe`
		// and the pod's status show an empty message for a migration that
		// failed or a service that refused its configuration.
		if c.TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError {
			v.addf("%s: terminationMessagePolicy is not FallbackToLogsOnError: its stop reason (on stderr) is missing from the pod's status", name)
		}
		checkSecretFiles(v, b, pod, name, &c)
		for _, e := range c.Env {
			if e.ValueFrom != nil {
				continue
			}
			if secretKey(e.Name) {
				v.addf("%s: secret-looking key %s set as a literal env value", name, e.Name)
			}
			if secretValue(e.Value) {
				v.addf("%s: secret-looking value in env %s", name, e.Name)
			}
		}
	}
}

// coreKeyFile returns the variable that names the core key file in env, the
// list (IDENTITY_KEYS_FILE, the form a rotation needs) or the legacy single
// key (IDENTITY_HMAC_KEY_FILE), and the file; "" and a violation when
// neither is set, and when both are (the services refuse to start).
func coreKeyFile(v *violations, container string, env map[string]string) (name, file string) {
	list, legacy := env["IDENTITY_KEYS_FILE"], env["IDENTITY_HMAC_KEY_FILE"]
	switch {
	case list != "" && legacy != "":
		v.addf("%s: sets both IDENTITY_KEYS_FILE and IDENTITY_HMAC_KEY_FILE: the service refuses to start; keep one", container)
		return "", ""
	case list != "":
		return "IDENTITY_KEYS_FILE", list
	case legacy != "":
		return "IDENTITY_HMAC_KEY_FILE", legacy
	}
	v.addf("%s: sets neither IDENTITY_KEYS_FILE nor IDENTITY_HMAC_KEY_FILE: no core key in a mounted Secret", container)
	return "", ""
}

// secretMounted reports whether dir is (or lies under) a mount of a Secret
// volume in container c.
func secretMounted(pod *corev1.PodSpec, c *corev1.Container, dir string) bool {
	for _, m := range c.VolumeMounts {
		if dir != m.MountPath && !strings.HasPrefix(dir, strings.TrimSuffix(m.MountPath, "/")+"/") {
			continue
		}
		for _, vol := range pod.Volumes {
			if vol.Name == m.Name && vol.Secret != nil {
				return true
			}
		}
	}
	return false
}

func restrictedPeers(from []networkingv1.NetworkPolicyPeer) bool {
	if len(from) == 0 {
		return false
	}
	for _, p := range from {
		if p.IPBlock != nil || (p.NamespaceSelector == nil && p.PodSelector == nil) {
			return false
		}
		if p.NamespaceSelector != nil && len(p.NamespaceSelector.MatchLabels) == 0 && len(p.NamespaceSelector.MatchExpressions) == 0 {
			return false // {} selects every namespace
		}
	}
	return true
}

// Words that make a variable name secret-looking, and final words that name
// something about a secret (where it is, how long it lives) rather than one.
var (
	secretWords = []string{"SECRET", "PASSWORD", "PASSWD", "PRIVATE", "CREDENTIAL", "CREDENTIALS", "KEY", "TOKEN", "APIKEY", "DSN"}
	safeLast    = []string{"FILE", "DIR", "PATH", "TTL", "ISSUER", "AUDIENCE", "GRACE", "ALG", "LEEWAY"}
)

func secretKey(name string) bool {
	words := strings.FieldsFunc(strings.ToUpper(name), func(r rune) bool { return r == '_' || r == '-' || r == '.' })
	if len(words) == 0 || slices.Contains(safeLast, words[len(words)-1]) {
		return false
	}
	for _, w := range words {
		if slices.Contains(secretWords, w) {
			return true
		}
	}
	return false
}

func secretValue(val string) bool {
	if strings.Contains(val, "-----BEGIN") || strings.Contains(strings.ToLower(val), "password=") {
		return true
	}
	for _, f := range strings.FieldsFunc(val, func(r rune) bool { return r == ' ' || r == ',' || r == '\n' }) {
		if !strings.Contains(f, "://") {
			continue
		}
		if u, err := url.Parse(f); err == nil && u.User != nil {
			if _, ok := u.User.Password(); ok {
				return true
			}
			// NATS takes a token as the user information alone
			// (nats://TOKEN@host), masked as a password is.
			if (u.Scheme == "nats" || u.Scheme == "tls") && u.User.Username() != "" {
				return true
			}
		}
	}
	return false
}

// Guard against a silently empty render: the rendered Deployment must carry
// the images set in the kustomization.
func TestImagesAreSet(t *testing.T) {
	b := renderBase(t)
	for _, c := range b.Deployments[0].Spec.Template.Spec.Containers {
		if !strings.HasPrefix(c.Image, "ghcr.io/tollgate-auth/") {
			t.Errorf("container %s image = %q, want the kustomization's image", c.Name, c.Image)
		}
	}
}

// mfaKeys checks a value the way coreapi reads MFA_ENCRYPTION_KEYS: a list
// of "id:base64" whose secrets are 32 bytes each.
func mfaKeys(v string) error {
	keys, err := identity.ParseKeys(v)
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		return errors.New("no key")
	}
	for _, k := range keys {
		if len(k.Secret) != 32 {
			return fmt.Errorf("key %s: %d bytes, want 32", k.ID, len(k.Secret))
		}
	}
	return nil
}

// smtpURL is the part of coreapi's SMTP_URL check the placeholder must
// fail (the deploy module cannot import coreapi's mail package): an
// smtp:// or smtps:// URL with a host.
func smtpURL(v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return err
	}
	if u.Scheme != "smtp" && u.Scheme != "smtps" || u.Hostname() == "" {
		return fmt.Errorf("want smtp://host or smtps://host, got %q", v)
	}
	return nil
}

// The bounds of the shutdown steps no manifest sets, as docs/operations.md
// "Shutdown" gives them (the deploy module cannot import the services'
// internals).
const (
	// serviceDrain is authproxy's and coreapi's SHUTDOWN_TIMEOUT unset.
	serviceDrain = 15 * time.Second
	// usageReport: authproxy's last API-key usage report, sent after its
	// drain beside the NATS close.
	usageReport = 2 * time.Second
	// proxyNATSClose: authproxy drains and closes its NATS connection
	// after its drain (natsinv.Subscriber.Close).
	proxyNATSClose = 5 * time.Second
	// After coreapi's drain its outbox relay deletes its row from
	// outbox_relays (relayDeregister), publishes what is still pending
	// (relayFlush, outbox's FlushTimeout), and its NATS connection is
	// drained and closed (coreNATSClose), one after the other.
	relayDeregister = time.Second
	relayFlush      = 5 * time.Second
	coreNATSClose   = 5 * time.Second
	// tracingShutdown: with tracing on, each service exports its last
	// spans as it exits (tracing.Provider.Shutdown).
	tracingShutdown = 5 * time.Second
	// notesDrain is the notes example's SHUTDOWN_TIMEOUT unset.
	notesDrain = 10 * time.Second
)

// gracePeriod is pod's terminationGracePeriodSeconds, Kubernetes' 30 s
// unset.
func gracePeriod(pod *corev1.PodSpec) time.Duration {
	if g := pod.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return 30 * time.Second
}

// shutdownTimeout is env's SHUTDOWN_TIMEOUT, or def when unset.
func shutdownTimeout(v *violations, name string, env map[string]string, def time.Duration) time.Duration {
	s, ok := env["SHUTDOWN_TIMEOUT"]
	if !ok {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		v.addf("%s: SHUTDOWN_TIMEOUT %q is not a positive duration", name, s)
		return def
	}
	return d
}

// tracingStop is what exporting the last spans adds to a service's stop:
// tracingShutdown when env turns tracing on, else nothing.
func tracingStop(env map[string]string) time.Duration {
	if c, err := tracing.Load(func(k string) string { return env[k] }, ""); err == nil && c.Enabled() {
		return tracingShutdown
	}
	return 0
}

// coreStop is the longest coreapi can take from the pod's termination to
// its exit, and its steps in words.
func coreStop(v *violations, c *corev1.Container, env map[string]string) (time.Duration, string) {
	pause, drain, traces := preStopSleep(c), shutdownTimeout(v, c.Name, env, serviceDrain), tracingStop(env)
	return pause + drain + relayDeregister + relayFlush + coreNATSClose + traces,
		fmt.Sprintf("preStop pause %s + SHUTDOWN_TIMEOUT %s + the relay's deregistration %s, last publication %s and NATS close %s%s",
			pause, drain, relayDeregister, relayFlush, coreNATSClose, spans(traces))
}

// spans words tracingStop's share of a stop.
func spans(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return fmt.Sprintf(" + the last spans' export %s", d)
}

// proxyStop is the longest authproxy can take from the moment it is told
// to stop (its preStop hook) to its exit, and its steps in words; drain is
// its SHUTDOWN_TIMEOUT as shutdownTimeout read it.
func proxyStop(c *corev1.Container, env map[string]string, drain time.Duration) (time.Duration, string) {
	pause, traces := preStopSleep(c), tracingStop(env)
	return pause + drain + max(proxyNATSClose, usageReport) + traces,
		fmt.Sprintf("preStop pause %s + SHUTDOWN_TIMEOUT %s + its NATS close %s (its last usage report beside it)%s",
			pause, drain, max(proxyNATSClose, usageReport), spans(traces))
}
