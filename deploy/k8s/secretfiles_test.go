package k8s

import (
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

// checkSecretFiles: a Secret reaches a service's environment only for a
// variable that has no _FILE variant (DATABASE_URL, SMTP_URL, NATS_URL).
// One that has it (the identity keys, the MFA keys, the API-key pepper,
// the upstream keys) is mounted and named by its _FILE: in the environment
// the key sits in /proc/<pid>/environ for the container's lifetime, is
// handed to every process the container starts, shows in whatever dumps
// the environment, and a rotated Secret reaches it only with a new pod.
func checkSecretFiles(v *violations, b *bundle, name string, c *corev1.Container) {
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
