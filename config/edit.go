package config

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"gopkg.in/yaml.v3"
)

// ClientRoutes returns the names of the routes whose clients: list names
// the client name, in config order.
func (c *Config) ClientRoutes(name string) []string {
	var routes []string
	for _, r := range c.Routes {
		if slices.Contains(r.Clients, name) {
			routes = append(routes, r.Name)
		}
	}
	return routes
}

// RemoveClient returns data, the config file named file, without the client
// name: its entry leaves the clients: list, and the list itself goes when
// it empties. The rest of the document, comments included, is kept as
// yaml.v3 re-encodes it. The result is checked to parse as a config, so
// that an edit can never leave a file till refuses. Whether routes still
// name the client is the caller's question (see ClientRoutes): this only
// edits.
func RemoveClient(file string, data []byte, name string) ([]byte, error) {
	out, err := removeClient(data, name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if _, err := Parse(file, out, filepath.Dir(file)); err != nil {
		return nil, fmt.Errorf("the edited config does not parse (a bug in till): %w", err)
	}
	return out, nil
}

func removeClient(data []byte, name string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("not a YAML mapping")
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "clients" || root.Content[i+1].Kind != yaml.SequenceNode {
			continue
		}
		seq := root.Content[i+1]
		for j, item := range seq.Content {
			for k := 0; k+1 < len(item.Content); k += 2 {
				if item.Content[k].Value == "name" && item.Content[k+1].Value == name {
					seq.Content = slices.Delete(seq.Content, j, j+1)
					if len(seq.Content) == 0 {
						root.Content = slices.Delete(root.Content, i, i+2)
					}
					var buf bytes.Buffer
					enc := yaml.NewEncoder(&buf)
					enc.SetIndent(2)
					if err := enc.Encode(&doc); err != nil {
						return nil, err
					}
					return buf.Bytes(), nil
				}
			}
		}
	}
	return nil, fmt.Errorf("no client %q", name)
}
