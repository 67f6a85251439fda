package k8s

// What the Kubernetes examples promise beyond their wiring: till's audit
// trail lands in a file on a writable volume, where its hash chain survives
// a restart of till's container, rotated so that it fits that volume; and
// the gateway's NetworkPolicy never lets till's pods reach an address that
// till itself refuses to dial, in CIDRs the API server accepts.

import (
	"fmt"
	"net/netip"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// TestAuditTrailOnVolume: the audit trail is what till promises an
// incident ("every key use recorded, hash-chained, before the key
// leaves"), so every example writes it to a file on a writable volume.
// On stdout ("-") the container runtime would mix it with till's own log
// (kubectl logs shows both), rotate it away at containerLogMaxSize and
// delete it with the pod, and each restart of till would begin a new
// chain at seq 1 with prev "": `till audit verify` would fail on the very
// first operational log line, and on the records of the previous
// container run as "seq 1 where N was expected", so the trail of a
// sidecar that restarted once (a liveness failure, an OOM kill) could not
// be told from one whose records were cut. A file on a writable volume
// continues its chain across restarts (seq continues, as the audit
// contract says for a file).
func TestAuditTrailOnVolume(t *testing.T) {
	for _, s := range loadSets(t) {
		t.Run(s.file, func(t *testing.T) {
			for _, w := range s.workloads {
				for _, c := range tillContainers(w) {
					st := s.setupOf(t, w, c)
					var cfg struct {
						Audit struct {
							File string `yaml:"file"`
						} `yaml:"audit"`
					}
					if err := yaml.Unmarshal(st.cfgText, &cfg); err != nil {
						t.Fatal(err)
					}
					f := cfg.Audit.File
					if f == "" || f == "-" {
						t.Errorf("%v: container %s: ConfigMap %s: audit.file is %q (stdout): the trail is interleaved with the operational log, rotated away by the kubelet, lost with the pod, and its hash chain restarts at every container restart, so `till audit verify` cannot check it; put it in a file on a writable volume", w, c.Name, st.configMap.Name, f)
						continue
					}
					if !path.IsAbs(f) {
						t.Errorf("%v: audit.file %q is relative to the ConfigMap's read-only folder", w, f)
						continue
					}
					m, ok := mountAt(c, path.Dir(f))
					if !ok {
						t.Errorf("%v: container %s: nothing is mounted at %s, the audit file's folder (the root file system is read-only)", w, c.Name, path.Dir(f))
						continue
					}
					v, _ := w.volume(m.Name)
					if m.ReadOnly || v.ConfigMap != nil || v.Secret != nil || v.Projected != nil {
						t.Errorf("%v: container %s: the audit folder %s is not a writable volume", w, c.Name, path.Dir(f))
					}
				}
			}
		})
	}
}

// TestEgressExceptsWhatTillRefuses: gateway.yaml's NetworkPolicy
// till-egress says till's pods reach "HTTPS to public addresses only
// (never the cluster's, a node's, or cloud metadata)", and README.md
// "private, CGNAT, link-local and metadata ranges excluded". So an ipBlock
// of everything (0.0.0.0/0, ::/0) excepts at least the ranges till itself
// refuses to dial (proxy/dialguard.go deniedPrefixes, invariant 4),
// among them NAT64 (64:ff9b::/96, 64:ff9b:1::/48), 6to4 (2002::/16),
// Teredo (2001::/32) and SIIT, which reach an embedded IPv4 address such
// as 10.x or 169.254.169.254 through a translator, and IPv4 ranges
// clusters use for pods (240.0.0.0/4, GKE's class E; 198.18.0.0/15;
// 192.0.0.0/24). Multicast (no TCP) is left out of the comparison.
func TestEgressExceptsWhatTillRefuses(t *testing.T) {
	src, err := os.ReadFile("../../proxy/dialguard.go")
	if err != nil {
		t.Fatal(err)
	}
	block := string(src)
	start := strings.Index(block, "var deniedPrefixes")
	end := strings.Index(block[start:], "}()")
	if start < 0 || end < 0 {
		t.Fatal("proxy/dialguard.go: deniedPrefixes not found")
	}
	var denied []netip.Prefix
	for _, m := range regexp.MustCompile(`"([0-9a-fA-F.:]+/[0-9]+)"`).FindAllStringSubmatch(block[start:start+end], -1) {
		p := netip.MustParsePrefix(m[1])
		if p.Addr().IsMulticast() {
			continue
		}
		denied = append(denied, p)
	}
	if len(denied) < 10 {
		t.Fatalf("read %d prefixes from proxy/dialguard.go: parsing is off", len(denied))
	}
	covered := func(p netip.Prefix, excepts []string) bool {
		for _, e := range excepts {
			ep, err := netip.ParsePrefix(e)
			if err == nil && ep.Bits() <= p.Bits() && ep.Contains(p.Addr()) {
				return true
			}
		}
		return false
	}
	checked := 0
	for _, s := range loadSets(t) {
		for _, np := range s.policies {
			for i, rule := range np.Spec.Egress {
				for _, peer := range rule.To {
					b := peer.IPBlock
					if b == nil {
						continue
					}
					all, err := netip.ParsePrefix(b.CIDR)
					if err != nil || all.Bits() != 0 {
						continue // a block of its own, not "everything but"
					}
					checked++
					for _, p := range denied {
						if p.Addr().Is4() != all.Addr().Is4() {
							continue
						}
						if !covered(p, b.Except) {
							t.Errorf("%s: NetworkPolicy %s: egress[%d] ipBlock %s lets till's pods reach %s, which till itself refuses to dial (proxy/dialguard.go)", s.file, np.Name, i, b.CIDR, p)
						}
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no egress ipBlock for 0.0.0.0/0 or ::/0 found: nothing checked")
	}
}

// TestAuditFitsItsVolume: an audit file on an emptyDir rotates (max_size,
// max_files), and the files till keeps, the one it writes and max_files
// rotated ones, fit the volume's sizeLimit: past it the kubelet evicts the
// pod, and the emptyDir goes with it, trail and all.
func TestAuditFitsItsVolume(t *testing.T) {
	for _, s := range loadSets(t) {
		for _, w := range s.workloads {
			for _, c := range tillContainers(w) {
				cfg := s.setupOf(t, w, c).cfg
				f := cfg.Audit.File
				if f == "" || f == "-" {
					continue // TestAuditTrailOnVolume says so
				}
				m, ok := mountAt(c, path.Dir(f))
				if !ok {
					continue
				}
				v, _ := w.volume(m.Name)
				if v.EmptyDir == nil {
					continue
				}
				if v.EmptyDir.SizeLimit == nil {
					t.Errorf("%s: %v: the emptyDir %s holding the audit trail has no sizeLimit: it may fill the node's disk", s.file, w, v.Name)
					continue
				}
				if cfg.Audit.MaxSize == "" {
					t.Errorf("%s: %v: audit.max_size is not set: the audit file grows until the emptyDir %s is full", s.file, w, v.Name)
					continue
				}
				size, err := auditSize(cfg.Audit.MaxSize)
				if err != nil {
					t.Errorf("%s: audit.max_size %q: %v", s.file, cfg.Audit.MaxSize, err)
					continue
				}
				files := int64(cfg.Audit.MaxFiles)
				if files == 0 {
					files = 10 // till's default
				}
				if need, limit := (files+1)*size, v.EmptyDir.SizeLimit.Value(); need > limit {
					t.Errorf("%s: %v: the audit trail may take %d bytes (%d files of %s), more than the emptyDir %s's sizeLimit %s", s.file, w, need, files+1, cfg.Audit.MaxSize, v.Name, v.EmptyDir.SizeLimit)
				}
			}
		}
	}
}

// auditSize reads a size as audit.max_size takes it: a whole number and
// an optional unit, B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB
// (powers of 1024).
func auditSize(s string) (int64, error) {
	i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	if i < 0 {
		i = len(s)
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, err
	}
	units := map[string]int64{"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
	u, ok := units[strings.ToLower(strings.TrimSpace(s[i:]))]
	if !ok {
		return 0, fmt.Errorf("unknown unit %q", s[i:])
	}
	return n * u, nil
}

// TestIPBlocksValidateStrictly: every ipBlock CIDR of a NetworkPolicy,
// except lists included, passes the API server's strict validation
// (StrictIPCIDRValidation): canonical, no bits past the prefix, and not
// written as an IPv4-mapped IPv6 address such as ::ffff:0:0/96.
func TestIPBlocksValidateStrictly(t *testing.T) {
	for _, s := range loadSets(t) {
		for _, np := range s.policies {
			var rules [][]networkingv1.NetworkPolicyPeer
			for _, r := range np.Spec.Egress {
				rules = append(rules, r.To)
			}
			for _, r := range np.Spec.Ingress {
				rules = append(rules, r.From)
			}
			for _, peers := range rules {
				for _, peer := range peers {
					if peer.IPBlock == nil {
						continue
					}
					for _, cidr := range append([]string{peer.IPBlock.CIDR}, peer.IPBlock.Except...) {
						for _, err := range validation.IsValidCIDR(field.NewPath("ipBlock"), cidr) {
							t.Errorf("%s: NetworkPolicy %s: %v", s.file, np.Name, err)
						}
					}
				}
			}
		}
	}
}
