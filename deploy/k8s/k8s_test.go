package k8sdeploy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/conf"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	k8sdeploy "github.com/aperture-gov/aperture/deploy/k8s"
	"github.com/aperture-gov/aperture/services/catalog"
	"github.com/aperture-gov/aperture/services/demo"
)

// image is the manifests' name for the image the Dockerfile builds (kustomization.yaml retags it).
const image = "aperture"

func load(t *testing.T) *k8sdeploy.Manifests {
	t.Helper()
	m, err := k8sdeploy.Load(".")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// secrets returns secrets.example.yaml: the Secrets an operator creates, with their keys.
func secrets(t *testing.T) map[string]map[string]bool {
	t.Helper()
	objs, err := k8sdeploy.LoadFile("secrets.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]bool{}
	for _, o := range objs {
		s, ok := o.Obj.(*corev1.Secret)
		if !ok {
			t.Fatalf("secrets.example.yaml holds a %s", o.Kind)
		}
		keys := map[string]bool{}
		for k := range s.StringData {
			keys[k] = true
		}
		out[o.Name] = keys
	}
	return out
}

// TestStrictDecoding: every file is listed by kustomization.yaml (or is the Secret example) and
// decodes into its typed object with no unknown field; a misspelt field fails.
func TestStrictDecoding(t *testing.T) {
	m := load(t)
	if len(m.Objects) == 0 {
		t.Fatal("no objects")
	}
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if f != "kustomization.yaml" && f != "secrets.example.yaml" && !slices.Contains(m.Kustomization.Resources, f) {
			t.Errorf("%s is not a resource of kustomization.yaml", f)
		}
	}
	if m.Kustomization.Namespace == "" || m.Find("Namespace", m.Kustomization.Namespace) == nil {
		t.Errorf("kustomization namespace %q is not created by the manifests", m.Kustomization.Namespace)
	}
	if !slices.ContainsFunc(m.Kustomization.Images, func(i struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
	}) bool {
		return i.Name == image
	}) {
		t.Errorf("kustomization.yaml does not set the %s image", image)
	}
	// The decoder must refuse what the API server would: prove it on a misspelt field.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  selectr: {a: b}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := k8sdeploy.LoadFile(bad); err == nil || !strings.Contains(err.Error(), "selectr") {
		t.Fatalf("a misspelt field decoded: %v", err)
	}
}

// TestReferences: selectors select the pods they are meant for, named ports exist, and every
// ConfigMap, Secret, key and volume a pod uses is there.
func TestReferences(t *testing.T) {
	m := load(t)
	secs := secrets(t)
	workloads := m.Workloads()
	for _, w := range workloads {
		labels := w.Template.Labels
		if len(w.Selector) == 0 {
			t.Errorf("%s %s: empty selector", w.Kind, w.Name)
		}
		for k, v := range w.Selector {
			if labels[k] != v {
				t.Errorf("%s %s: selector %s=%s does not match its pod labels %v", w.Kind, w.Name, k, v, labels)
			}
		}
		spec := &w.Template.Spec
		volumes := map[string]corev1.Volume{}
		for _, v := range spec.Volumes {
			volumes[v.Name] = v
			switch {
			case v.ConfigMap != nil:
				checkConfigMap(t, m, w.Name, v.ConfigMap.Name, keysOf(v.ConfigMap.Items))
			case v.Secret != nil:
				checkSecret(t, secs, w.Name, v.Secret.SecretName, keysOf(v.Secret.Items))
			}
		}
		for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
			ports := map[string]int32{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			for _, vm := range c.VolumeMounts {
				if _, ok := volumes[vm.Name]; !ok && !slices.Contains(w.Claims, vm.Name) {
					t.Errorf("%s/%s mounts volume %q, which is not defined", w.Name, c.Name, vm.Name)
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					continue
				}
				if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
					checkConfigMap(t, m, w.Name, r.Name, []string{r.Key})
				}
				if r := e.ValueFrom.SecretKeyRef; r != nil {
					checkSecret(t, secs, w.Name, r.Name, []string{r.Key})
				}
			}
			for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
				if p == nil {
					continue
				}
				var port intstr.IntOrString
				switch {
				case p.HTTPGet != nil:
					port = p.HTTPGet.Port
				case p.TCPSocket != nil:
					port = p.TCPSocket.Port
				default:
					continue
				}
				checkPort(t, fmt.Sprintf("%s/%s probe", w.Name, c.Name), port, ports)
			}
			// The restricted pod security standard the namespace enforces.
			sc := c.SecurityContext
			if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
				t.Errorf("%s/%s: want no privilege escalation, a read-only root and every capability dropped", w.Name, c.Name)
			}
		}
		if psc := spec.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 ||
			psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: pods must run as a non-root user with the runtime's seccomp profile", w.Name)
		}
	}
	for _, o := range m.Objects {
		switch obj := o.Obj.(type) {
		case *corev1.Service:
			var selected []k8sdeploy.Workload
			for _, w := range workloads {
				if matches(obj.Spec.Selector, w.Template.Labels) {
					selected = append(selected, w)
				}
			}
			if len(obj.Spec.Selector) == 0 || len(selected) != 1 {
				t.Errorf("Service %s selects %d workloads, want exactly one", o.Name, len(selected))
				continue
			}
			ports := map[string]int32{}
			for _, c := range selected[0].Template.Spec.Containers {
				for _, p := range c.Ports {
					ports[p.Name] = p.ContainerPort
				}
			}
			for _, p := range obj.Spec.Ports {
				target := p.TargetPort
				if target.IntVal == 0 && target.StrVal == "" {
					target = intstr.FromInt32(p.Port)
				}
				checkPort(t, "Service "+o.Name+" port "+p.Name, target, ports)
			}
		case *appsv1.StatefulSet:
			svc, _ := m.Find("Service", obj.Spec.ServiceName).(*corev1.Service)
			if svc == nil {
				t.Errorf("StatefulSet %s: governing Service %q missing", o.Name, obj.Spec.ServiceName)
			}
		}
	}
}

func keysOf(items []corev1.KeyToPath) []string {
	var out []string
	for _, i := range items {
		out = append(out, i.Key)
	}
	return out
}

func checkConfigMap(t *testing.T, m *k8sdeploy.Manifests, user, name string, keys []string) {
	t.Helper()
	cm, _ := m.Find("ConfigMap", name).(*corev1.ConfigMap)
	if cm == nil {
		t.Errorf("%s uses ConfigMap %q, which the manifests do not define", user, name)
		return
	}
	for _, k := range keys {
		if _, ok := cm.Data[k]; !ok {
			t.Errorf("%s uses key %q of ConfigMap %s, which it does not have", user, k, name)
		}
	}
}

func checkSecret(t *testing.T, secs map[string]map[string]bool, user, name string, keys []string) {
	t.Helper()
	s, ok := secs[name]
	if !ok {
		t.Errorf("%s uses Secret %q, which secrets.example.yaml does not list", user, name)
		return
	}
	for _, k := range keys {
		if !s[k] {
			t.Errorf("%s uses key %q of Secret %s, which secrets.example.yaml does not list", user, k, name)
		}
	}
}

func checkPort(t *testing.T, what string, port intstr.IntOrString, named map[string]int32) {
	t.Helper()
	if port.Type == intstr.String {
		if _, ok := named[port.StrVal]; !ok {
			t.Errorf("%s: no container port named %q", what, port.StrVal)
		}
		return
	}
	for _, p := range named {
		if p == port.IntVal {
			return
		}
	}
	t.Errorf("%s: no container port %d", what, port.IntVal)
}

func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// flagValues returns the --name=value arguments of args.
func flagValues(args []string) map[string]string {
	out := map[string]string{}
	for _, a := range args {
		if name, v, ok := strings.Cut(strings.TrimLeft(a, "-"), "="); ok && strings.HasPrefix(a, "-") {
			out[name] = v
		}
	}
	return out
}

// TestTopology: three NATS nodes whose routes and the brokers' URL name exactly those nodes, three
// broker replicas replicating on three, one authority Deployment per authority of services/catalog
// reached by the broker at its Service, and a witness.
func TestTopology(t *testing.T) {
	m := load(t)
	nats, _ := m.Find("StatefulSet", "nats").(*appsv1.StatefulSet)
	if nats == nil || nats.Spec.Replicas == nil || *nats.Spec.Replicas != 3 {
		t.Fatal("want StatefulSet nats with 3 replicas")
	}
	var nodes []string
	for i := range *nats.Spec.Replicas {
		nodes = append(nodes, fmt.Sprintf("nats-%d.%s", i, nats.Spec.ServiceName))
	}
	svc, _ := m.Find("Service", nats.Spec.ServiceName).(*corev1.Service)
	if svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service %s must be headless: it gives the nodes their names", nats.Spec.ServiceName)
	}

	// The NATS config: auth.conf is deploy/nats's (which deploy/nats's test checks against the
	// registry), nats.conf parses as nats-server reads it and routes to every node.
	cm, _ := m.Find("ConfigMap", "nats-config").(*corev1.ConfigMap)
	if cm == nil {
		t.Fatal("ConfigMap nats-config missing")
	}
	want, err := os.ReadFile("../nats/auth.conf")
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["auth.conf"] != string(want) {
		t.Error("nats-config auth.conf differs from deploy/nats/auth.conf")
	}
	dir := t.TempDir()
	for k, v := range cm.Data {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("POD_NAME", "nats-0")
	t.Setenv("APERTURE_BROKER_NKEY", "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4")
	parsed, err := conf.ParseFileWithChecks(filepath.Join(dir, "nats.conf"))
	if err != nil {
		t.Fatalf("nats.conf: %v", err)
	}
	var routes []string
	if cl, ok := unwrap(parsed["cluster"]).(map[string]any); ok {
		rs, _ := unwrap(cl["routes"]).([]any)
		for _, r := range rs {
			routes = append(routes, strings.TrimSuffix(strings.TrimPrefix(fmt.Sprint(unwrap(r)), "nats-route://"), ":6222"))
		}
	}
	if !slices.Equal(routes, nodes) {
		t.Errorf("routes %v, want the nodes %v", routes, nodes)
	}

	brokers := m.Invocations(image)
	var broker *k8sdeploy.Invocation
	authorities := map[string]string{} // id → Service:port serving it
	witness := false
	for i, inv := range brokers {
		switch {
		case len(inv.Args) > 0 && inv.Args[0] == "broker":
			broker = &brokers[i]
		case len(inv.Args) > 1 && inv.Args[0] == "authority":
			id := inv.Args[1]
			port := flagValues(inv.Args)["listen"]
			_, p, _ := strings.Cut(port, ":")
			for _, o := range m.Objects {
				if s, ok := o.Obj.(*corev1.Service); ok && s.Spec.Selector["app.kubernetes.io/name"] == inv.Workload {
					for _, sp := range s.Spec.Ports {
						if strconv.Itoa(int(sp.Port)) == p {
							authorities[id] = fmt.Sprintf("%s:%d", o.Name, sp.Port)
						}
					}
				}
			}
			if _, ok := authorities[id]; !ok {
				t.Errorf("authority %s: no Service port reaches its --listen %s", id, port)
			}
		case len(inv.Args) > 1 && inv.Args[0] == "witness" && inv.Args[1] == "serve":
			witness = true
		}
	}
	if !witness {
		t.Error("no witness")
	}
	if broker == nil {
		t.Fatal("no broker Deployment")
	}
	dep, _ := m.Find("Deployment", broker.Workload).(*appsv1.Deployment)
	if dep == nil || dep.Spec.Replicas == nil || *dep.Spec.Replicas != 3 {
		t.Errorf("want 3 broker replicas")
	}
	fv := flagValues(broker.Args)
	if fv["replicas"] != strconv.Itoa(int(*nats.Spec.Replicas)) {
		t.Errorf("broker --replicas=%s, want the %d NATS nodes", fv["replicas"], *nats.Spec.Replicas)
	}
	var urls []string
	for _, u := range strings.Split(fv["nats-url"], ",") {
		urls = append(urls, strings.TrimSuffix(strings.TrimPrefix(u, "tls://"), ":4222"))
	}
	if !slices.Equal(urls, nodes) {
		t.Errorf("broker --nats-url names %v, want the nodes %v over TLS on 4222", urls, nodes)
	}

	// The authorities: exactly those of services/catalog, each where the broker looks for it.
	var ids []string
	for _, a := range catalog.Examples(demo.New(1, time.Now())) {
		ids = append(ids, a.ID)
	}
	slices.Sort(ids)
	var deployed []string
	for id := range authorities {
		deployed = append(deployed, id)
	}
	slices.Sort(deployed)
	if !slices.Equal(deployed, ids) {
		t.Errorf("authority Deployments for %v, want services/catalog's %v", deployed, ids)
	}
	addrs := map[string]string{}
	for _, pair := range strings.Split(fv["authority-addresses"], ",") {
		id, addr, _ := strings.Cut(pair, "=")
		addrs[id] = addr
	}
	for id, at := range authorities {
		if addrs[id] != at {
			t.Errorf("broker --authority-addresses has %s at %q, want its Service %s", id, addrs[id], at)
		}
	}
}

// unwrap returns the value of a conf item parsed with checks (which wraps values with their position).
func unwrap(v any) any {
	type valuer interface{ Value() any }
	if tk, ok := v.(valuer); ok {
		return tk.Value()
	}
	return v
}

// TestDockerfile: the image is built from ./cmd/aperture, statically, into the path every manifest
// runs, and runs as a non-root user.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	build := regexp.MustCompile(`(?m)^RUN CGO_ENABLED=0 .*go build .*-o (\S+) \./cmd/aperture\s*$`).FindStringSubmatch(df)
	if build == nil {
		t.Fatal("Dockerfile: no static (CGO_ENABLED=0) go build -o PATH ./cmd/aperture")
	}
	stages := regexp.MustCompile(`(?m)^FROM `).FindAllStringIndex(df, -1)
	if len(stages) < 2 {
		t.Fatal("Dockerfile: want a build stage and a runtime stage")
	}
	final := df[stages[len(stages)-1][0]:]
	if !regexp.MustCompile(`^FROM (gcr\.io/distroless/static\S*|scratch)\s`).MatchString(final) {
		t.Errorf("Dockerfile: runtime stage is not distroless static or scratch:\n%s", final)
	}
	cp := regexp.MustCompile(`(?m)^COPY --from=\S+ (\S+) (\S+)\s*$`).FindStringSubmatch(final)
	if cp == nil || cp[1] != build[1] {
		t.Fatalf("Dockerfile: the runtime stage does not copy the built %s", build[1])
	}
	entry := regexp.MustCompile(`(?m)^ENTRYPOINT \["([^"]+)"\]`).FindStringSubmatch(final)
	if entry == nil || entry[1] != cp[2] {
		t.Fatalf("Dockerfile: ENTRYPOINT is not the copied binary %s", cp[2])
	}
	user := regexp.MustCompile(`(?m)^USER (\S+)`).FindStringSubmatch(final)
	if user == nil || strings.HasPrefix(user[1], "0") || strings.HasPrefix(user[1], "root") {
		t.Error("Dockerfile: the runtime stage must set a non-root USER")
	}
	invs := load(t).Invocations(image)
	if len(invs) == 0 {
		t.Fatal("no container runs the aperture image")
	}
	for _, inv := range invs {
		if len(inv.Command) != 1 || inv.Command[0] != entry[1] {
			t.Errorf("%s/%s runs %v, want the image's %s", inv.Workload, inv.Container, inv.Command, entry[1])
		}
	}
}
