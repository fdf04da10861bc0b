package k8s

import (
	"path"
	"sync"

	corev1 "k8s.io/api/core/v1"

	"github.com/tollgate-auth/tollgate/shared/envconfig"
)

// serviceTables are the services' configuration tables, read from their
// sources once (serviceVars for a test).
var serviceTables = sync.OnceValues(func() (map[string]envconfig.Table, error) {
	out := map[string]envconfig.Table{}
	for svc, file := range configSources {
		table, err := parseTable(file)
		if err != nil {
			return nil, err
		}
		out[svc] = table
	}
	return out, nil
})

// connectionURLFiles name the files of the connection URLs, whose
// passwords come from Secrets.
var connectionURLFiles = []string{"DATABASE_URL_FILE", "SMTP_URL_FILE", "NATS_URL_FILE"}

// checkSecretFiles: a Secret reaches a service's environment only for a
// variable that has no _FILE variant. One that has it (the identity keys,
// the MFA keys, the API-key pepper, the upstream keys, the database's,
// mail server's and NATS URLs) is mounted and named by its _FILE: in the
// environment the secret sits in /proc/<pid>/environ for the container's
// lifetime, is handed to every process the container starts, shows in
// whatever dumps the environment and in kubectl describe, and a rotated
// Secret reaches it only with a new pod. A connection URL's file lies in
// a mounted Secret; and no variable is set together with its _FILE (the
// shared ConfigMap's NATS_URL included): the service refuses to start.
func checkSecretFiles(v *violations, b *bundle, pod *corev1.PodSpec, name string, c *corev1.Container) {
	svc := serviceOf(c)
	if svc == "" {
		return
	}
	tables, err := serviceTables()
	if err != nil {
		v.addf("%s: the services' configuration tables: %v", name, err)
		return
	}
	hasFile := func(env string) bool {
		_, ok := tables[svc].Lookup(env + "_FILE")
		return ok
	}
	env := b.env(&violations{}, c) // a missing ConfigMap is reported by check
	for k, val := range env {
		if f := env[k+"_FILE"]; val != "" && f != "" && hasFile(k) {
			v.addf("%s: sets %s and %s (%s): the service refuses to start with both; blank %s (value \"\")", name, k, k+"_FILE", f, k)
		}
	}
	for _, f := range connectionURLFiles {
		if p := env[f]; p != "" {
			if s, _ := secretFile(pod, c, p); s == "" {
				v.addf("%s: %s %q is not a file of a mounted Secret", name, f, p)
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && hasFile(e.Name) {
			v.addf("%s: %s from Secret %s in the environment; mount the Secret and set %s_FILE", name, e.Name, e.ValueFrom.SecretKeyRef.Name, e.Name)
		}
	}
	for _, ef := range c.EnvFrom {
		if ef.SecretRef == nil {
			continue
		}
		for _, s := range b.Secrets {
			if s.Name != ef.SecretRef.Name {
				continue
			}
			for k := range s.Data {
				if hasFile(ef.Prefix + k) {
					v.addf("%s: %s from Secret %s in the environment (envFrom); mount the Secret and set %s_FILE", name, ef.Prefix+k, s.Name, ef.Prefix+k)
				}
			}
		}
	}
}

// secretFile returns the Secret and the key of that Secret whose file is
// file in container c (the mount at its directory, the volume's items
// mapping keys to other names), or "" when none is mounted there.
func secretFile(pod *corev1.PodSpec, c *corev1.Container, file string) (secret, key string) {
	dir, base := path.Dir(file), path.Base(file)
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) != dir || m.SubPath != "" {
			continue
		}
		for _, vol := range pod.Volumes {
			if vol.Name != m.Name || vol.Secret == nil {
				continue
			}
			if len(vol.Secret.Items) == 0 {
				return vol.Secret.SecretName, base
			}
			for _, it := range vol.Secret.Items {
				if path.Clean(it.Path) == base {
					return vol.Secret.SecretName, it.Key
				}
			}
		}
	}
	return "", ""
}
