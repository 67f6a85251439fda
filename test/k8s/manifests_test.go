package k8s

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// examplesDir holds the manifests under test.
var examplesDir = filepath.Join("..", "..", "examples", "kubernetes")

// scheme knows every kind the examples may use; a kind outside it (or a
// misspelt one) fails to decode.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, networkingv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// strict decodes YAML by apiVersion and kind into the typed object, and
// refuses unknown, misspelt (field names are case-sensitive) and
// duplicated fields: what the API server's strict field validation does.
var strict = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
	kjson.SerializerOptions{Yaml: true, Strict: true})

// object is one decoded manifest.
type object struct {
	file string // base name of the file it came from
	doc  int    // its position in the file, from 1
	gvk  schema.GroupVersionKind
	obj  runtime.Object
}

// String names the object by file, position and kind, for messages.
func (o object) String() string {
	return fmt.Sprintf("%s#%d (%s)", o.file, o.doc, o.gvk.Kind)
}

// decode decodes one YAML document strictly.
func decode(data []byte) (runtime.Object, *schema.GroupVersionKind, error) {
	obj, gvk, err := strict.Decode(data, nil, nil)
	if err != nil {
		// With Strict, a field error comes with the object: refuse it all
		// the same.
		return nil, gvk, err
	}
	return obj, gvk, nil
}

// documents splits a multi-document YAML file, leaving out documents that
// hold only comments.
func documents(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if !onlyComments(doc) {
			docs = append(docs, doc)
		}
	}
}

func onlyComments(doc []byte) bool {
	for line := range strings.Lines(string(doc)) {
		line = strings.TrimSpace(line)
		if line != "" && line != "---" && !strings.HasPrefix(line, "#") {
			return false
		}
	}
	return true
}

// manifestFiles lists examples/kubernetes/*.yaml.
func manifestFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	yml, _ := filepath.Glob(filepath.Join(examplesDir, "*.yml"))
	files = append(files, yml...)
	if len(files) == 0 {
		t.Fatalf("no manifests in %s", examplesDir)
	}
	slices.Sort(files)
	return files
}

// loadFile decodes every document of one manifest file, failing the test
// at the first that does not decode strictly.
func loadFile(t *testing.T, path string) []object {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return decodeAll(t, filepath.Base(path), data)
}

// decodeAll decodes every document of a manifest file called name.
func decodeAll(t reporter, name string, data []byte) []object {
	t.Helper()
	docs, err := documents(data)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var objs []object
	for i, doc := range docs {
		obj, gvk, err := decode(doc)
		if err != nil {
			t.Fatalf("%s: document %d: %v", name, i+1, err)
		}
		objs = append(objs, object{file: name, doc: i + 1, gvk: *gvk, obj: obj})
	}
	return objs
}

// wantKinds are the kinds the examples use, by their Go type: decoding
// by kind must give exactly these.
var wantKinds = map[string]any{
	"ConfigMap":           &corev1.ConfigMap{},
	"ServiceAccount":      &corev1.ServiceAccount{},
	"Secret":              &corev1.Secret{},
	"Service":             &corev1.Service{},
	"Pod":                 &corev1.Pod{},
	"Deployment":          &appsv1.Deployment{},
	"PodDisruptionBudget": &policyv1.PodDisruptionBudget{},
	"NetworkPolicy":       &networkingv1.NetworkPolicy{},
}

// TestManifestsDecodeStrictly decodes every document of every manifest by
// its kind into the Kubernetes type, refusing unknown or misspelt fields.
func TestManifestsDecodeStrictly(t *testing.T) {
	seen := map[string]int{}
	for _, path := range manifestFiles(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			objs := loadFile(t, path)
			if len(objs) == 0 {
				t.Fatal("no objects")
			}
			for _, o := range objs {
				want, ok := wantKinds[o.gvk.Kind]
				if !ok {
					t.Errorf("%v: kind %q is not one this test knows how to check", o, o.gvk.Kind)
					continue
				}
				if got, want := fmt.Sprintf("%T", o.obj), fmt.Sprintf("%T", want); got != want {
					t.Errorf("%v: decoded into %s, want %s", o, got, want)
				}
				if meta(o.obj).GetName() == "" {
					t.Errorf("%v: no metadata.name", o)
				}
				seen[o.gvk.Kind]++
			}
		})
	}
	for _, kind := range []string{"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"} {
		if seen[kind] == 0 {
			t.Errorf("no %s among the manifests", kind)
		}
	}
}

// TestStrictDecodingRefuses shows that the decoder the other tests rely on
// refuses the mistakes it is there to catch.
func TestStrictDecodingRefuses(t *testing.T) {
	const good = `apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  replicas: 1
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec:
      containers:
        - name: x
          image: x
          ports: [{containerPort: 8080}]
`
	if _, _, err := decode([]byte(good)); err != nil {
		t.Fatalf("the valid Deployment: %v", err)
	}
	tests := []struct {
		name, old, new string
	}{
		{"unknown field", "replicas: 1", "replicas: 1\n  replicaz: 2"},
		{"wrong case", "containerPort", "containerport"},
		{"duplicate field", "replicas: 1", "replicas: 1\n  replicas: 2"},
		{"misplaced field", "image: x", "image: x\n          fsGroup: 1"},
		{"wrong type", "replicas: 1", "replicas: two"},
		{"unknown kind", "kind: Deployment", "kind: Deploymnet"},
		{"unknown version", "apiVersion: apps/v1", "apiVersion: apps/v1beta9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := strings.Replace(good, tt.old, tt.new, 1)
			if bad == good {
				t.Fatalf("%q not in the manifest", tt.old)
			}
			if _, _, err := decode([]byte(bad)); err == nil {
				t.Errorf("decoded without error:\n%s", bad)
			}
		})
	}
}
