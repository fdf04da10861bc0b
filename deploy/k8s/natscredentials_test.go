package k8s

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// natsComponentDir gives coreapi and the proxies NATS credentials of
// their own.
const natsComponentDir = "components/nats-credentials"

// TestNATSCredentialsComponent renders the base with the component
// nats-credentials and a Secret tollgate-nats as the documented overlay
// generates it: each container reads its NATS URL from that Secret (its
// generated name) mounted as a file (NATS_URL_FILE), under a key of its
// own, with the ConfigMap's NATS_URL blanked, and the base's invariants
// hold.
// The users the documented URLs name are those of the NATS authorization
// the deployment ships (deploy/nats/tollgate.conf).
func TestNATSCredentialsComponent(t *testing.T) {
	fsys := filesys.MakeFsInMemory()
	copyBase(t, fsys, "/k/base")
	copyDir(t, fsys, natsComponentDir, "/k/components/nats-credentials")
	urls := map[string]string{
		"coreapi-url":   "nats://coreapi:0123abcd@nats.nats.svc:4222",
		"authproxy-url": "nats://authproxy:4567cdef@nats.nats.svc:4222",
	}
	overlay := "resources: [../base]\ncomponents: [../components/nats-credentials]\nsecretGenerator:\n  - name: tollgate-nats\n    literals:\n"
	for k, v := range urls {
		overlay += "      - " + k + "=" + v + "\n"
	}
	if err := fsys.WriteFile("/k/overlay/kustomization.yaml", []byte(overlay)); err != nil {
		t.Fatal(err)
	}
	b, err := render(fsys, "/k/overlay")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range check(b) {
		t.Error(v)
	}
	var secret *corev1.Secret
	for _, s := range b.Secrets {
		if strings.HasPrefix(s.Name, "tollgate-nats-") {
			secret = s
		}
	}
	if secret == nil {
		t.Fatal("no Secret tollgate-nats rendered")
	}

	t.Setenv("TOLLGATE_NATS_COREAPI_PASSWORD", "x")
	t.Setenv("TOLLGATE_NATS_AUTHPROXY_PASSWORD", "x")
	opts, err := server.ProcessConfigFile(filepath.Join("..", "nats", "tollgate.conf"))
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]bool{}
	for _, u := range opts.Users {
		users[u.Username] = true
	}

	pod := &b.Deployments[0].Spec.Template.Spec
	for name, key := range map[string]string{proxyName: "authproxy-url", coreName: "coreapi-url"} {
		if err := natsURLFrom(b, pod, ctr(t, b, name), secret.Name, key); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if u, err := url.Parse(urls[key]); err != nil || !users[u.User.Username()] {
			t.Errorf("%s: %s names no user of deploy/nats/tollgate.conf", key, urls[key])
		}
	}
}

// TestNATSCredentialsReachTheSidecars renders the app-sidecar overlay with
// the component nats-credentials, as an installation whose NATS server
// runs deploy/nats/tollgate.conf does: every proxy, the app pods'
// sidecars included, reads the authproxy user's NATS URL from the Secret
// tollgate-nats mounted as a file. The component patched the Deployment tollgate only, so
// the sidecars kept the ConfigMap's NATS_URL, which names no user: the
// server refused them, and no invalidation (a revoked role, session or API
// key) reached the app pods' proxies.
func TestNATSCredentialsReachTheSidecars(t *testing.T) {
	fsys := filesys.MakeFsInMemory()
	copyBase(t, fsys, "/k/base")
	copyDir(t, fsys, natsComponentDir, "/k/components/nats-credentials")
	copyTree(t, fsys, sidecarDir, "/k/overlays/app-sidecar")
	overlay := "resources: [../overlays/app-sidecar]\ncomponents: [../components/nats-credentials]\nsecretGenerator:\n  - name: tollgate-nats\n    literals:\n" +
		"      - coreapi-url=nats://coreapi:0123abcd@nats.nats.svc:4222\n" +
		"      - authproxy-url=nats://authproxy:4567cdef@nats.nats.svc:4222\n"
	if err := fsys.WriteFile("/k/overlay/kustomization.yaml", []byte(overlay)); err != nil {
		t.Fatal(err)
	}
	b, err := render(fsys, "/k/overlay")
	if err != nil {
		t.Fatal(err)
	}
	if v := checkSidecar(b); len(v) != 0 {
		t.Fatalf("overlay with nats-credentials is not clean:\n%s", strings.Join(v, "\n"))
	}
	var secret string
	for _, s := range b.Secrets {
		if strings.HasPrefix(s.Name, "tollgate-nats-") {
			secret = s.Name
		}
	}
	proxies := 0
	for _, d := range b.Deployments {
		pod := &d.Spec.Template.Spec
		for _, c := range allContainers(pod) {
			if !strings.HasSuffix(strings.SplitN(c.Image, ":", 2)[0], "/authproxy") {
				continue
			}
			proxies++
			if err := natsURLFrom(b, pod, c, secret, "authproxy-url"); err != nil {
				t.Errorf("Deployment %s container %s: %v (the ConfigMap's NATS_URL names no NATS user)", d.Name, c.Name, err)
			}
		}
	}
	if proxies != 2 {
		t.Errorf("%d authproxy containers, want 2 (coreapi's pod and the app's)", proxies)
	}
}

// natsURLFrom checks that container c reads its NATS URL from key of the
// Secret secret, mounted as the file NATS_URL_FILE names, and that no
// NATS_URL (the ConfigMap's, or one from a Secret) is set beside it.
func natsURLFrom(b *bundle, pod *corev1.PodSpec, c *corev1.Container, secret, key string) error {
	env := b.env(&violations{}, c)
	if env["NATS_URL"] != "" {
		return fmt.Errorf("NATS_URL is %q beside NATS_URL_FILE, want it blank", env["NATS_URL"])
	}
	s, k := secretFile(pod, c, env["NATS_URL_FILE"])
	if s != secret || k != key {
		return fmt.Errorf("NATS_URL_FILE %q is key %q of Secret %q, want key %s of Secret %s", env["NATS_URL_FILE"], k, s, key, secret)
	}
	return nil
}
