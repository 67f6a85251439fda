package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tillgw/till/internal/atomicfile"
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

// SecretRoutes returns the names of the routes that attach the vault
// entry name (alone or in a pool), in config order.
func (c *Config) SecretRoutes(name string) []string {
	var routes []string
	for _, r := range c.Routes {
		if slices.ContainsFunc(r.Keys(), func(k PoolMember) bool { return k.Ref == nil && k.Secret == name }) {
			routes = append(routes, r.Name)
		}
	}
	return routes
}

// ClientBudgets returns the names of the budgets whose clients: list
// names the client name, in config order.
func (c *Config) ClientBudgets(name string) []string {
	var budgets []string
	for _, b := range c.Budgets {
		if slices.Contains(b.Clients, name) {
			budgets = append(budgets, b.Name)
		}
	}
	return budgets
}

// editLockTimeout is how long EditFile waits for another till command's
// edit of the same file to finish.
var editLockTimeout = 10 * time.Second

// EditFile replaces the config file at path (the file a link there
// names) with edit's result, keeping its mode and owner. Edits take a lock beside the file (path + ".lock"),
// so that two till commands editing it at once both land, one after the
// other; and the new file replaces the old through a rename, so that a
// running till never reads half an edit.
func EditFile(path string, edit func([]byte) ([]byte, error)) error {
	// A config that is a link (to a file kept elsewhere) is edited where
	// it lives, and stays a link.
	if target, err := filepath.EvalSymlinks(path); err == nil {
		path = target
	}
	unlock, err := atomicfile.Lock(path, editLockTimeout)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer unlock()
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	out, err := edit(data)
	if err != nil {
		return err
	}
	if err := atomicfile.Replace(path, out, st.Mode().Perm()); err != nil {
		return fmt.Errorf("%s: cannot write the edited config: %w", path, err)
	}
	return nil
}

// RemoveClient returns data, the config file named file, without the client
// name: its entry leaves the clients: list, and the list itself goes when
// it empties. The rest of the document is kept byte for byte (see
// splice.go). The result is checked to parse as a config, so
// that an edit can never leave a file till refuses. Whether routes or
// budgets still name the client is the caller's question (see
// ClientRoutes, ClientBudgets): this only edits.
func RemoveClient(file string, data []byte, name string) ([]byte, error) {
	return checked(file)(removeClient(data, name))
}

// checked returns what checks an edit of the config file named file: its
// error gets the file's name, and its result must parse as a config.
func checked(file string) func([]byte, error) ([]byte, error) {
	return func(out []byte, err error) ([]byte, error) {
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		if _, err := Parse(file, out, filepath.Dir(file)); err != nil {
			return nil, fmt.Errorf("with this change the config would not parse: %w", err)
		}
		return out, nil
	}
}

func removeClient(data []byte, name string) ([]byte, error) {
	doc, root, err := decodeMapping(data)
	if err != nil {
		return nil, err
	}
	i, j, err := findClient(root, name)
	if err != nil {
		return nil, err
	}
	seq := root.Content[i+1]
	if root.Style&yaml.FlowStyle == 0 && newlinesOnly(data) && blockItems(data, seq) && !continuesItem(data, seq.Content[j]) {
		item := seq.Content[j]
		from, to := item.Line, endLine(item)
		if len(seq.Content) == 1 {
			from = root.Content[i].Line // the list goes with its last entry
		}
		return splice(data, lineStart(data, from), lineStart(data, to+1), ""), nil
	}
	seq.Content = slices.Delete(seq.Content, j, j+1)
	if len(seq.Content) == 0 {
		// The comments above clients: (the commented examples till init
		// writes, which AddClient moved there) stay, above the key that
		// follows.
		if key := root.Content[i]; key.HeadComment != "" && i+2 < len(root.Content) {
			next := root.Content[i+2]
			next.HeadComment = strings.TrimSpace(key.HeadComment + "\n" + next.HeadComment)
		}
		root.Content = slices.Delete(root.Content, i, i+2)
	}
	return encodeDoc(doc)
}

// SetClientToken returns data, the config file named file, with the
// token_sha256 of the client name replaced by tokenSHA256: the rest of its
// entry (cidrs, cert) and of the document is kept byte for byte. The result is checked to parse as a config.
func SetClientToken(file string, data []byte, name, tokenSHA256 string) ([]byte, error) {
	return checked(file)(setClientToken(data, name, tokenSHA256))
}

func setClientToken(data []byte, name, tokenSHA256 string) ([]byte, error) {
	doc, root, err := decodeMapping(data)
	if err != nil {
		return nil, err
	}
	i, j, err := findClient(root, name)
	if err != nil {
		return nil, err
	}
	entry := root.Content[i+1].Content[j]
	for k := 0; k+1 < len(entry.Content); k += 2 {
		if entry.Content[k].Value == "token_sha256" {
			v := entry.Content[k+1]
			if out, ok := replaceScalar(data, v, tokenSHA256); ok && newlinesOnly(data) {
				return out, nil
			}
			v.Kind, v.Tag, v.Style, v.Value = yaml.ScalarNode, "!!str", 0, tokenSHA256
			return encodeDoc(doc)
		}
	}
	return nil, fmt.Errorf("client %q has no token_sha256", name)
}

// findClient finds the client name in a config's top-level mapping: the
// index i of the clients: key in root.Content, and j of its entry in the
// list that follows.
func findClient(root *yaml.Node, name string) (i, j int, err error) {
	for i = 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "clients" || root.Content[i+1].Kind != yaml.SequenceNode {
			continue
		}
		for j, item := range root.Content[i+1].Content {
			for k := 0; k+1 < len(item.Content); k += 2 {
				if item.Content[k].Value == "name" && item.Content[k+1].Value == name {
					return i, j, nil
				}
			}
		}
	}
	return 0, 0, fmt.Errorf("no client %q", name)
}

// AddClient returns data, the config file named file, with c added to
// the end of its clients: list (made when absent, before routes:). The
// rest of the document is kept byte for byte. The result is checked to parse as a config, so that an edit can
// never leave a file till refuses (a name already there, say). c.Line is
// not used.
func AddClient(file string, data []byte, c Client) ([]byte, error) {
	return checked(file)(addClient(data, c))
}

func addClient(data []byte, c Client) ([]byte, error) {
	doc, root, err := decodeMapping(data)
	if err != nil {
		return nil, err
	}
	entry := clientNode(c)
	if out, ok, err := spliceClient(data, root, entry); ok || err != nil {
		return out, err
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "clients" {
			continue
		}
		switch v := root.Content[i+1]; {
		case v.Kind == yaml.SequenceNode:
			v.Content = append(v.Content, entry)
		case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
			root.Content[i+1] = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Content: []*yaml.Node{entry},
				HeadComment: v.HeadComment, LineComment: v.LineComment, FootComment: v.FootComment}
		default:
			return nil, errors.New("clients: is not a list")
		}
		return encodeDoc(doc)
	}
	key := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "clients"}
	at := len(root.Content)
	for i := 0; i+1 < len(root.Content); i += 2 {
		if r := root.Content[i]; r.Value == "routes" {
			at = i
			// The comments above routes: that show a commented-out
			// clients: list (as till init writes) stay above the real one.
			if strings.Contains(r.HeadComment, "clients:") {
				key.HeadComment, r.HeadComment = r.HeadComment, ""
			}
			break
		}
	}
	list := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Content: []*yaml.Node{entry}}
	root.Content = slices.Insert(root.Content, at, key, list)
	return encodeDoc(doc)
}

// clientNode is c as an entry of the clients: list.
func clientNode(c Client) *yaml.Node {
	str := func(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v} }
	entry := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	entry.Content = append(entry.Content, str("name"), str(c.Name), str("token_sha256"), str(c.TokenSHA256))
	if len(c.CIDRs) > 0 {
		cidrs := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
		for _, p := range c.CIDRs {
			cidrs.Content = append(cidrs.Content, str(p.String()))
		}
		entry.Content = append(entry.Content, str("cidrs"), cidrs)
	}
	if c.Cert {
		entry.Content = append(entry.Content, str("cert"), &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "true"})
	}
	return entry
}

// ClientLines is c as the lines of an entry of a clients: list indented
// by two spaces, quoted where YAML needs it ("null", "yes"), as AddClient
// would add it.
func ClientLines(c Client) (string, error) { return itemLines("  - ", clientNode(c)) }

// spliceClient adds entry to the clients: list of data, whose top-level
// mapping is root, as lines of text: after the list's last entry, under
// an empty clients: key, or in a new list before routes: (or at the end);
// false when the layout is not one it can add lines to.
func spliceClient(data []byte, root, entry *yaml.Node) ([]byte, bool, error) {
	if root.Style&yaml.FlowStyle != 0 || !newlinesOnly(data) {
		return nil, false, nil
	}
	at, head, prefix := len(data), "clients:\n", "  - "
	for i := 0; i+1 < len(root.Content); i += 2 {
		key, v := root.Content[i], root.Content[i+1]
		switch {
		case key.Value == "routes" && head != "":
			at = lineStart(data, key.Line)
			continue
		case key.Value != "clients":
			continue
		case blockItems(data, v):
			prefix, _ = itemPrefix(data, v.Content[0])
			if continues(data, endLine(v), prefix) {
				return nil, false, nil
			}
			if v.Content[0].Style&yaml.FlowStyle != 0 {
				entry.Style = yaml.FlowStyle // as the entries before it
			}
			at = lineStart(data, endLine(v)+1)
		case v.Tag == "!!null" && v.Value == "" && v.Line == key.Line:
			at = lineStart(data, key.Line+1) // clients: with nothing after it
		default:
			return nil, false, nil
		}
		head = ""
		break
	}
	lines, err := itemLines(prefix, entry)
	if err != nil {
		return nil, false, err
	}
	return insertLines(data, at, strings.ReplaceAll(head+lines, "\n", lineBreak(data))), true, nil
}

// decodeMapping parses a config file as a YAML document whose top level
// is a mapping.
func decodeMapping(data []byte) (doc, root *yaml.Node, err error) {
	doc = &yaml.Node{}
	if err := yaml.Unmarshal(data, doc); err != nil {
		return nil, nil, err
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, nil, errors.New("not a YAML mapping")
	}
	return doc, doc.Content[0], nil
}

// encodeDoc writes doc back out as the config's edits do: two-space
// indents.
func encodeDoc(doc *yaml.Node) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
