package config

import (
	_ "embed"
	"errors"
	"maps"
	"net/textproto"
	"slices"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// Preset is a catalog entry for a provider: the defaults a route with
// "preset: NAME" starts from.
type Preset struct {
	// Name is the preset's name, also its default route name and prefix.
	Name string
	// Upstream is the provider's API origin (https).
	Upstream string
	// BaseURLPath is what to append to till's route URL to get the base URL
	// the provider's SDK wants ("/v1" for openai, so
	// http://127.0.0.1:8080/openai/v1); "" when the SDK adds the version
	// itself.
	BaseURLPath string
	// Docs is the provider's documentation on authentication.
	Docs string
	// Inject is how the provider expects its key.
	Inject Inject
	// Headers are request headers the provider requires, added when the
	// app did not send them (canonical keys).
	Headers map[string]string
	// Strip are the credential headers the provider's SDKs send.
	Strip []string
	// StripQuery are the query parameters that carry the provider's key
	// when an app's SDK sends it in the URL.
	StripQuery []string
	// Secret is the default vault entry name: the preset's name.
	Secret string
	// Usage is how the provider's responses report token usage (one of
	// UsageFormats); "none" when they do not.
	Usage string
	// StreamsReportUsage says the provider reports usage in every stream
	// and refuses the field that asks it to (Mistral: 422 on
	// stream_options), so till does not ask.
	StreamsReportUsage bool
}

//go:embed presets.yaml
var presetsYAML []byte

var presetKeys = []string{"name", "upstream", "base_url_path", "docs", "secret", "inject", "headers", "strip", "strip_query", "usage", "streams_report_usage"}

// catalog parses presets.yaml once. The file is part of the binary and a
// test parses it, so an error here is a build mistake, not bad input.
var catalog = sync.OnceValue(func() []Preset {
	ps, err := parsePresets(presetsYAML)
	if err != nil {
		panic("config: bad embedded presets.yaml: " + err.Error())
	}
	return ps
})

func parsePresets(data []byte) ([]Preset, error) {
	d := &decoder{file: "presets.yaml", dir: "/", presets: true}
	root, err := d.parseYAML(data)
	if err != nil {
		return nil, err
	}
	var out []Preset
	d.list(root, "", func(n *yaml.Node, path string) {
		f := d.fields(n, path, presetKeys)
		var p Preset
		if v := f["name"]; v != nil {
			if s, ok := d.nonEmpty(v, join(path, "name")); ok && d.check(v, join(path, "name"), ValidName(s)) {
				p.Name = s
			}
		}
		p.Secret = p.Name
		if v := f["secret"]; v != nil {
			p.Secret, _ = d.nonEmpty(v, join(path, "secret"))
		}
		if v := f["upstream"]; v != nil {
			if s, ok := d.nonEmpty(v, join(path, "upstream")); ok {
				if _, err := parseUpstream(strings.ReplaceAll(s, RegionPlaceholder, "us-east-1"), false); d.check(v, join(path, "upstream"), err) {
					p.Upstream = s
				}
			}
		}
		if v := f["base_url_path"]; v != nil {
			p.BaseURLPath, _ = d.str(v, join(path, "base_url_path"))
		}
		if v := f["docs"]; v != nil {
			if s, ok := d.nonEmpty(v, join(path, "docs")); ok && d.check(v, join(path, "docs"), validHTTPSURL(s)) {
				p.Docs = s
			}
		}
		if v := f["inject"]; v != nil {
			p.Inject, _ = d.inject(v, join(path, "inject"))
		}
		if v := f["headers"]; v != nil {
			p.Headers = d.headers(v, join(path, "headers"), nil)
		}
		if v := f["strip"]; v != nil {
			for _, s := range d.strs(v, join(path, "strip")) {
				p.Strip = append(p.Strip, textproto.CanonicalMIMEHeaderKey(s))
			}
		}
		if v := f["strip_query"]; v != nil {
			p.StripQuery = d.strs(v, join(path, "strip_query"))
		}
		p.Usage = UsageNone
		if v := f["usage"]; v != nil {
			p.Usage, _ = d.enum(v, join(path, "usage"), UsageFormats...)
		}
		if v := f["streams_report_usage"]; v != nil {
			p.StreamsReportUsage = d.boolean(v, join(path, "streams_report_usage"))
		}
		if p.Name == "" || p.Upstream == "" || p.Docs == "" || (p.Inject.Header == "" && p.Inject.Query == "" && p.Inject.Basic == nil &&
			p.Inject.AWSSigV4 == nil && p.Inject.OAuth2 == nil && p.Inject.GitHubApp == nil && p.Inject.Google == nil) {
			d.errorf(n, path, "needs name, upstream, docs and inject")
		}
		out = append(out, p)
	})
	if len(d.errs) > 0 {
		errs := make([]error, len(d.errs))
		for i, e := range d.errs {
			errs[i] = e
		}
		return nil, errors.Join(errs...)
	}
	slices.SortFunc(out, func(a, b Preset) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// RegionPlaceholder in a preset's upstream (and SigV4 region) is replaced
// by the route's region: bedrock, bedrock-agent and vertex need one.
const RegionPlaceholder = "{region}"

// NeedsRegion reports whether the preset's upstream names a region.
func (p Preset) NeedsRegion() bool { return strings.Contains(p.Upstream, RegionPlaceholder) }

// NeedsApp reports whether the preset mints GitHub App tokens, whose app
// and installation a route must name.
func (p Preset) NeedsApp() bool { return p.Inject.GitHubApp != nil }

// Presets returns the built-in provider presets, sorted by name. The
// result is a copy; changing it changes nothing else.
func Presets() []Preset {
	ps := slices.Clone(catalog())
	for i := range ps {
		ps[i] = ps[i].clone()
	}
	return ps
}

// LookupPreset returns the preset called name.
func LookupPreset(name string) (Preset, bool) {
	for _, p := range catalog() {
		if p.Name == name {
			return p.clone(), true
		}
	}
	return Preset{}, false
}

func (p Preset) clone() Preset {
	p.Headers = maps.Clone(p.Headers)
	if p.Inject.AWSSigV4 != nil {
		sig := *p.Inject.AWSSigV4
		p.Inject.AWSSigV4 = &sig
	}
	p.Strip = slices.Clone(p.Strip)
	p.StripQuery = slices.Clone(p.StripQuery)
	if p.Inject.Basic != nil {
		b := *p.Inject.Basic
		p.Inject.Basic = &b
	}
	return p
}

func presetNames() []string {
	var names []string
	for _, p := range catalog() {
		names = append(names, p.Name)
	}
	return names
}
