// Package k8sdeploy reads the Kubernetes manifests of deploy/k8s for the tests that check them without
// a cluster: every object decoded strictly into its typed Kubernetes API struct (an unknown or
// misspelt field is an error), and the aperture command lines the pods run, for checking against the
// binary's flags.
package k8sdeploy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// Kustomization is the part of kustomization.yaml these manifests use; anything else is refused.
type Kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Labels     []struct {
		Pairs map[string]string `json:"pairs"`
	} `json:"labels"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
	} `json:"images"`
}

// Object is one decoded manifest document.
type Object struct {
	File string
	Kind string
	Name string
	// Obj is a pointer to the typed object: *corev1.Service, *appsv1.Deployment, …
	Obj any
}

// Workload is a Deployment or StatefulSet: what runs pods.
type Workload struct {
	Kind, Name string
	Replicas   int32
	Selector   map[string]string
	Template   *corev1.PodTemplateSpec
	// Claims are the StatefulSet's volumeClaimTemplates names (mountable like volumes).
	Claims []string
}

// Manifests is deploy/k8s decoded.
type Manifests struct {
	Kustomization Kustomization
	Objects       []Object
}

// Load decodes dir/kustomization.yaml and every resource it lists.
func Load(dir string) (*Manifests, error) {
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	var m Manifests
	if err := yaml.UnmarshalStrict(b, &m.Kustomization); err != nil {
		return nil, fmt.Errorf("kustomization.yaml: %w", err)
	}
	for _, r := range m.Kustomization.Resources {
		objs, err := LoadFile(filepath.Join(dir, r))
		if err != nil {
			return nil, err
		}
		m.Objects = append(m.Objects, objs...)
	}
	return &m, nil
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// LoadFile decodes every document of a manifest file strictly into its typed object.
func LoadFile(path string) ([]Object, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []Object
	for i, doc := range docSep.Split(string(b), -1) {
		if len(bytes.TrimSpace(stripComments([]byte(doc)))) == 0 {
			continue
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			return nil, fmt.Errorf("%s document %d: %w", path, i+1, err)
		}
		var obj any
		switch meta.APIVersion + " " + meta.Kind {
		case "v1 Namespace":
			obj = &corev1.Namespace{}
		case "v1 ConfigMap":
			obj = &corev1.ConfigMap{}
		case "v1 Secret":
			obj = &corev1.Secret{}
		case "v1 Service":
			obj = &corev1.Service{}
		case "apps/v1 Deployment":
			obj = &appsv1.Deployment{}
		case "apps/v1 StatefulSet":
			obj = &appsv1.StatefulSet{}
		case "policy/v1 PodDisruptionBudget":
			obj = &policyv1.PodDisruptionBudget{}
		default:
			return nil, fmt.Errorf("%s document %d: %s %s is not a kind these manifests use", path, i+1, meta.APIVersion, meta.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			return nil, fmt.Errorf("%s: %s %s: %w", path, meta.Kind, meta.Metadata.Name, err)
		}
		if meta.Metadata.Name == "" {
			return nil, fmt.Errorf("%s document %d: %s without a name", path, i+1, meta.Kind)
		}
		out = append(out, Object{File: filepath.Base(path), Kind: meta.Kind, Name: meta.Metadata.Name, Obj: obj})
	}
	return out, nil
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// Workloads returns the Deployments and StatefulSets.
func (m *Manifests) Workloads() []Workload {
	var out []Workload
	for _, o := range m.Objects {
		switch w := o.Obj.(type) {
		case *appsv1.Deployment:
			out = append(out, Workload{Kind: o.Kind, Name: o.Name, Replicas: replicas(w.Spec.Replicas), Selector: selector(w.Spec.Selector.MatchLabels), Template: &w.Spec.Template})
		case *appsv1.StatefulSet:
			wl := Workload{Kind: o.Kind, Name: o.Name, Replicas: replicas(w.Spec.Replicas), Selector: selector(w.Spec.Selector.MatchLabels), Template: &w.Spec.Template}
			for _, c := range w.Spec.VolumeClaimTemplates {
				wl.Claims = append(wl.Claims, c.Name)
			}
			out = append(out, wl)
		}
	}
	return out
}

func replicas(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

func selector(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// Find returns the object of kind and name, or nil.
func (m *Manifests) Find(kind, name string) any {
	for _, o := range m.Objects {
		if o.Kind == kind && o.Name == name {
			return o.Obj
		}
	}
	return nil
}

// Invocation is one container that runs the aperture binary.
type Invocation struct {
	Workload, Container string
	// Command is the container's command (the binary's path); Args its arguments.
	Command, Args []string
	// Env names the container's environment variables.
	Env []string
}

// Invocations returns the containers whose image is image (before kustomize rewrites it).
func (m *Manifests) Invocations(image string) []Invocation {
	var out []Invocation
	for _, w := range m.Workloads() {
		for _, c := range w.Template.Spec.Containers {
			if c.Image != image {
				continue
			}
			inv := Invocation{Workload: w.Name, Container: c.Name, Command: c.Command, Args: c.Args}
			for _, e := range c.Env {
				inv.Env = append(inv.Env, e.Name)
			}
			out = append(out, inv)
		}
	}
	return out
}
