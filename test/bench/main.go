// Command bench is till's load harness. It starts a local HTTPS upstream
// (every provider is one), till (built from ./cmd/till) and, when
// installed, nginx with the equivalent config (upstream TLS verified, kept
// alive); pins the proxies to CPU 0 and itself (load and upstream) to CPU 1;
// checks that each proxy injects the key; then measures, interleaved over
// rounds: CPU per request at a fixed rate, added latency at that rate (open
// loop, wrk2-style scheduling), throughput with the proxy's core saturated
// (wrk when installed), peak RSS and RSS with idle keep-alive clients,
// time to the first Server-Sent Event, intercept mode, 10 vs 10,000 routes,
// a key from a source vs one from the vault, and usage metering off and
// on for a 1 kB JSON answer and a 500-event stream (each pair measured at
// once, as are nginx and till again for a steadier CPU ratio, with GETs
// and with POSTs of a 1 kB chat completion). It prints one table and exits
// non-zero if injection was not verified or a figure has no round left: a
// round whose requests fail (on a machine too loaded to answer in time) is
// reported and not counted. It asserts nothing about speed.
//
//	go run ./test/bench            # full run (a few minutes)
//	go run ./test/bench -short     # seconds: proves the harness works
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

const benchKey = "sk-bench-0123456789abcdefghijklmnop"

// The credentials of the routes that sign (SigV4) and mint (OAuth2).
const (
	benchAccessKeyID = "AKIABENCH0000000001"
	benchToken       = "bench-minted-token-0123456789"
)

var (
	short  = flag.Bool("short", false, "a quick run that only proves the harness works")
	rounds = flag.Int("rounds", 5, "interleaved rounds per figure")
	rate   = flag.Int("rate", 1000, "fixed request rate (req/s) for CPU and latency")
	dur    = flag.Duration("dur", 5*time.Second, "length of each fixed-rate and throughput run")
	idle   = flag.Int("idle", 1000, "idle keep-alive clients for the RSS figure")
	only   = flag.String("only", "", "comma-separated `figures` to measure ("+strings.Join(allFigures, ", ")+"); default all")
	before = flag.String("before", "", "a till `binary` built from an earlier commit: measured with nginx at once as till is, to give a change's cost in the same run")
)

// allFigures are the figures the harness measures, in the order it
// measures them in each round.
var allFigures = []string{"direct", "nginx", "till", "intercept", "routes", "source", "usage", "creds", "paired"}

// figures is the figures -only names, in its order, or all of them; a
// name that is none of them is an error, not a run that skips it.
func figures(only string) ([]string, error) {
	if only == "" {
		return allFigures, nil
	}
	order := strings.Split(only, ",")
	for _, name := range order {
		if !slices.Contains(allFigures, name) {
			return nil, fmt.Errorf("-only: no figure %q (figures: %s)", name, strings.Join(allFigures, ", "))
		}
	}
	return order, nil
}

func main() {
	flag.Parse()
	order, err := figures(*only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: error:", err)
		os.Exit(2)
	}
	if *short {
		*rounds, *dur, *idle = 1, time.Second, 100
	}
	if err := run(order); err != nil {
		fmt.Fprintln(os.Stderr, "bench: error:", err)
		os.Exit(1)
	}
}

// upstream answers like a provider and counts what it saw.
type upstream struct {
	verified, wrong atomic.Int64
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	if r.URL.Path == "/oauth/token" {
		// The token endpoint of the route that mints (OAuth2).
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"`+benchToken+`","token_type":"Bearer","expires_in":3600}`)
		return
	}
	switch auth := r.Header.Get("Authorization"); {
	case auth == "Bearer "+benchKey, auth == "Bearer "+benchToken,
		strings.HasPrefix(auth, "AWS4-HMAC-SHA256 Credential="+benchAccessKeyID+"/"):
		u.verified.Add(1)
	default:
		u.wrong.Add(1)
	}
	if strings.HasSuffix(r.URL.Path, "/sse") {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
		io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		time.Sleep(50 * time.Millisecond)
		io.WriteString(w, "data: last\n\n")
		return
	}
	if strings.HasSuffix(r.URL.Path, "/stream500") {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("X-Accel-Buffering", "no")
		for range 500 {
			// Each event goes as it is made, as providers stream tokens.
			io.WriteString(w, streamChunk)
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, streamUsage+"data: [DONE]\n\n")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, chatAnswer)
}

// chatAnswer is a chat completion answer of about 1 kB with its usage, as
// providers send; streamChunk one event of a streamed one, streamUsage its
// final usage chunk.
var (
	chatAnswer = `{"id":"chatcmpl-bench","object":"chat.completion","created":1733000000,"model":"gpt-4o-mini-2024-07-18",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"` + strings.Repeat("dolor sit amet ", 48) + `","refusal":null},"logprobs":null,"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":240,"completion_tokens":180,"total_tokens":420,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},` +
		`"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},` +
		`"service_tier":"default","system_fingerprint":"fp_bench"}`
	streamChunk = `data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1733000000,"model":"gpt-4o-mini-2024-07-18",` +
		`"system_fingerprint":"fp_bench","choices":[{"index":0,"delta":{"content":" word"},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n"
	streamUsage = `data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1733000000,"model":"gpt-4o-mini-2024-07-18",` +
		`"choices":[],"usage":{"prompt_tokens":240,"completion_tokens":500,"total_tokens":740}}` + "\n\n"
)

// target is something to send load to: direct, nginx or a till.
type target struct {
	name   string
	url    string // request URL
	client *http.Client
	pid    int    // the proxy process, 0 for direct
	direct bool   // the app holds the key itself: the baseline
	body   string // a POST body; "" sends GETs
	rate   int    // requests per second in paired runs; 0 means -rate
}

// chatBody is a chat completion request of about 1 kB, as an LLM SDK sends.
var chatBody = `{"model":"gpt-bench","messages":[{"role":"user","content":"` + strings.Repeat("lorem ipsum ", 80) + `"}]}`

// withKey makes c send the key itself, as an app without till would.
func withKey(c *http.Client) *http.Client {
	c.Transport = keyAdder{c.Transport}
	return c
}

type keyAdder struct{ http.RoundTripper }

func (k keyAdder) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+benchKey)
	return k.RoundTripper.RoundTrip(r)
}

func run(order []string) error {
	if runtime.NumCPU() >= 2 {
		pinSelf(1)
	}
	work, err := os.MkdirTemp("", "till-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	till := filepath.Join(work, "till")
	// Built as the Docker image builds it: static, stripped.
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", till, "./cmd/till")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build till: %v\n%s", err, out)
	}

	// An HTTPS upstream that offers HTTP/2, as providers do: each proxy
	// verifies its certificate and keeps its connections alive (nginx
	// speaks HTTP/1.1 to upstreams; till takes HTTP/2 when offered).
	up := &upstream{}
	tlsUp := httptest.NewUnstartedServer(up)
	tlsUp.EnableHTTP2 = true
	tlsUp.StartTLS()
	defer tlsUp.Close()
	upCA := filepath.Join(work, "upstream-ca.pem")
	if err := os.WriteFile(upCA, pemCert(tlsUp.Certificate()), 0o644); err != nil {
		return err
	}
	upAddr := tlsUp.Listener.Addr().String()

	procs := &processes{}
	defer procs.stopAll()
	// The openai preset injects "Authorization: Bearer {secret}". One line
	// a route keeps 10,000 of them under the config's 1 MiB cap.
	route := func(name, upURL string) string {
		return fmt.Sprintf("  - {name: %s, preset: openai, upstream: %q, secret: openai}\n", name, upURL)
	}
	base := "version: 1\naudit: {file: audit.log}\nroutes:\n" + route("openai", tlsUp.URL)

	reverse, err := startTill(procs, till, work, "reverse", base, upCA, false)
	if err != nil {
		return err
	}
	var earlier *tillProc
	if *before != "" {
		if earlier, err = startTill(procs, *before, work, "before", base, upCA, false); err != nil {
			return err
		}
	}
	icpt, err := startTill(procs, till, work, "intercept", "version: 1\naudit: {file: audit.log}\nforward: {enabled: true}\nroutes:\n"+route("openai", tlsUp.URL), upCA, true)
	if err != nil {
		return err
	}
	var few, many strings.Builder
	few.WriteString("version: 1\naudit: {file: audit.log}\nroutes:\n")
	many.WriteString(few.String())
	for i := range 10_000 {
		r := route("r"+strconv.Itoa(i), tlsUp.URL)
		if i < 10 {
			few.WriteString(r)
		}
		many.WriteString(r)
	}
	routes10, err := startTill(procs, till, work, "routes-10", few.String(), upCA, false)
	if err != nil {
		return err
	}
	routes10k, err := startTill(procs, till, work, "routes-10000", many.String(), upCA, false)
	if err != nil {
		return err
	}
	// The same route with its key from a files source, refreshed in the
	// background every 1.5 s (ttl 2s) while the load runs.
	keys := filepath.Join(work, "source-keys")
	if err := os.MkdirAll(keys, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(keys, "openai"), []byte(benchKey+"\n"), 0o600); err != nil {
		return err
	}
	sourced, err := startTill(procs, till, work, "sourced", "version: 1\naudit: {file: audit.log}\nsources:\n  - {name: mounted, type: files, dir: "+keys+", ttl: 2s}\nroutes:\n"+
		fmt.Sprintf("  - {name: openai, preset: openai, upstream: %q, secret: \"mounted:openai\"}\n", tlsUp.URL), upCA, false)
	if err != nil {
		return err
	}
	// The same route without usage metering, to measure what reading the
	// answers' usage costs (the openai preset meters it).
	unmetered, err := startTill(procs, till, work, "unmetered", "version: 1\naudit: {file: audit.log}\nroutes:\n"+
		fmt.Sprintf("  - {name: openai, preset: openai, usage: none, upstream: %q, secret: openai}\n", tlsUp.URL), upCA, false)
	if err != nil {
		return err
	}
	// The route signing with SigV4, and the one minting OAuth2 tokens,
	// against the same upstream, to compare with the static key.
	signing, err := startTill(procs, till, work, "sigv4", "version: 1\naudit: {file: audit.log}\nroutes:\n"+
		fmt.Sprintf("  - {name: openai, upstream: %q, secret: aws, inject: {aws_sigv4: {service: bedrock, region: us-east-1}}}\n", tlsUp.URL), upCA, false,
		"aws", `{"access_key_id":"`+benchAccessKeyID+`","secret_access_key":"bench-secret-access-key"}`)
	if err != nil {
		return err
	}
	minting, err := startTill(procs, till, work, "oauth2", "version: 1\naudit: {file: audit.log}\nroutes:\n"+
		fmt.Sprintf("  - {name: openai, upstream: %q, secret: oauth, inject: {oauth2: {token_url: %q}}}\n", tlsUp.URL, tlsUp.URL+"/oauth/token"), upCA, false,
		"oauth", `{"client_id":"bench","client_secret":"bench-client-secret"}`)
	if err != nil {
		return err
	}
	nginxAddr, nginxPID, err := startNginx(procs, work, upAddr, upCA)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: nginx:", err, "(its column stays empty)")
	}

	targets := map[string]*target{
		"direct":       {name: "direct", url: tlsUp.URL + "/v1/chat/completions", client: withKey(trusting(newClient(nil), tlsUp)), direct: true},
		"till":         {name: "till", url: "http://" + reverse.addr + "/openai/v1/chat/completions", client: newClient(nil), pid: reverse.pid},
		"intercept":    {name: "till, intercept", url: "https://" + upAddr + "/v1/chat/completions", client: newClient(icpt), pid: icpt.pid},
		"routes-10":    {name: "till, 10 routes", url: "http://" + routes10.addr + "/r5/v1/chat/completions", client: newClient(nil), pid: routes10.pid},
		"routes-10000": {name: "till, 10,000 routes", url: "http://" + routes10k.addr + "/r5000/v1/chat/completions", client: newClient(nil), pid: routes10k.pid},
		"sourced":      {name: "till, key from a source", url: "http://" + sourced.addr + "/openai/v1/chat/completions", client: newClient(nil), pid: sourced.pid},
		"unmetered":    {name: "till, usage not metered", url: "http://" + unmetered.addr + "/openai/v1/chat/completions", client: newClient(nil), pid: unmetered.pid},
		"sigv4":        {name: "till, SigV4", url: "http://" + signing.addr + "/openai/v1/chat/completions", client: newClient(nil), pid: signing.pid},
		"oauth2":       {name: "till, OAuth2", url: "http://" + minting.addr + "/openai/v1/chat/completions", client: newClient(nil), pid: minting.pid},
	}
	if earlier != nil {
		targets["before"] = &target{name: "till, before", url: "http://" + earlier.addr + "/openai/v1/chat/completions", client: newClient(nil), pid: earlier.pid}
	}
	if nginxAddr != "" {
		targets["nginx"] = &target{name: "nginx", url: "http://" + nginxAddr + "/openai/v1/chat/completions", client: newClient(nil), pid: nginxPID}
	}

	// Injection first: a faster proxy that does not inject is not measured.
	for name, t := range targets {
		before := up.verified.Load()
		if err := send(t); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if name != "direct" && up.verified.Load() != before+1 {
			return fmt.Errorf("%s: the upstream did not receive the key: injection not verified", name)
		}
	}
	fmt.Fprintf(os.Stderr, "bench: injection verified through %d proxies\n", len(targets)-1)

	res := newResults()
	failed := map[string]int{}
	for round := 1; round <= *rounds; round++ {
		for _, name := range order {
			// A round that fails (a shared machine so loaded that
			// requests time out, or a proxy that drops them) is left
			// out of its figure and reported, not the whole run.
			if err := measure(round, name, targets, res); err != nil {
				failed[name]++
				fmt.Fprintf(os.Stderr, "bench: round %d: %s: %v (not counted)\n", round, name, err)
			}
		}
	}
	for _, name := range []string{"nginx", "till"} {
		if t, ok := targets[name]; ok {
			res.add(name, "hwm", float64(procStatus(t.pid, "VmHWM")))
			rss, err := idleRSS(t, *idle)
			if err != nil {
				return fmt.Errorf("%s: idle clients: %w", name, err)
			}
			res.add(name, "idle", float64(rss))
		}
	}
	if w := up.wrong.Load(); w > 0 {
		return fmt.Errorf("the upstream received %d requests without the key", w)
	}
	res.print(os.Stdout)
	return reportFailed(os.Stdout, order, failed)
}

// reportFailed lists the rounds left out of each figure, and fails the run
// when a figure has none left.
func reportFailed(w io.Writer, order []string, failed map[string]int) error {
	var none []string
	for _, name := range order {
		if n := failed[name]; n > 0 {
			fmt.Fprintf(w, "%s: %d of %d round(s) failed and are not counted (see stderr)\n", name, n, *rounds)
			if n == *rounds {
				none = append(none, name)
			}
		}
	}
	if len(none) > 0 {
		return fmt.Errorf("no round of %s succeeded", strings.Join(none, ", "))
	}
	return nil
}

// measure takes round's figure name, adding what it measured to res.
func measure(round int, name string, targets map[string]*target, res *results) error {
	if name == "paired" {
		ng, ok := targets["nginx"]
		if !ok {
			return nil
		}
		// A cross-check of the CPU figure, steadier on a shared
		// machine for the same reason as the route tables; again
		// with POSTs of a chat completion, the shape of LLM traffic.
		type pair struct{ figure, method, body, till string }
		pairs := []pair{{"paired", "GET", "", "till"}, {"paired-post", "POST", chatBody, "till"}}
		if _, ok := targets["before"]; ok {
			earlier := []pair{{"paired-before", "GET", "", "before"}, {"paired-post-before", "POST", chatBody, "before"}}
			// The pair measured first in a round read 2-3% dearer in
			// two runs with the tills' roles swapped: the tills take
			// turns going first.
			if round%2 == 0 {
				pairs = append(earlier, pairs...)
			} else {
				pairs = append(pairs, earlier...)
			}
		}
		for _, p := range pairs {
			ngp, tlp := *ng, *targets[p.till]
			ngp.body, tlp.body = p.body, p.body
			fmt.Fprintf(os.Stderr, "bench: round %d: nginx and %s together, %s, %d req/s each\n", round, tlp.name, p.method, *rate)
			ratio, n, tl, err := costRatio(&ngp, &tlp)
			if err != nil {
				return err
			}
			res.add(p.figure, "ratio", ratio)
			fmt.Fprintf(os.Stderr, "bench: round %d: nginx %.0f µs, till %.0f µs per request: %.2f× (both orders)\n", round, n.cpuPerReq, tl.cpuPerReq, ratio)
		}
		return nil
	}
	if name == "usage" {
		// Usage metering: a 1 kB JSON answer to a 1 kB POST, and a
		// 500-event stream (at a tenth of the rate), unmetered and
		// metered together.
		for _, p := range []struct {
			figure, path string
			rate         int
		}{{"usage-json", "/openai/v1/chat/completions", 0}, {"usage-sse", "/openai/v1/stream500", *rate / 10}} {
			off, on := *targets["unmetered"], *targets["till"]
			off.url = strings.Replace(off.url, "/openai/v1/chat/completions", p.path, 1)
			on.url = strings.Replace(on.url, "/openai/v1/chat/completions", p.path, 1)
			off.body, on.body, off.rate, on.rate = chatBody, chatBody, p.rate, p.rate
			fmt.Fprintf(os.Stderr, "bench: round %d: usage metering off and on together, %s\n", round, p.figure)
			ratio, mOff, mOn, err := costRatio(&off, &on)
			if err != nil {
				return err
			}
			res.add(p.figure, "ratio", ratio)
			fmt.Fprintf(os.Stderr, "bench: round %d: %s: unmetered %.0f µs, metered %.0f µs per request\n", round, p.figure, mOff.cpuPerReq, mOn.cpuPerReq)
		}
		return nil
	}
	if name == "creds" {
		// A 1 kB POST signed with SigV4, or with a cached OAuth2
		// token, against the same with a static key (usage not
		// metered on either side), measured at once.
		for _, other := range []string{"sigv4", "oauth2"} {
			static, t := *targets["unmetered"], *targets[other]
			static.body, t.body = chatBody, chatBody
			fmt.Fprintf(os.Stderr, "bench: round %d: static key and %s together\n", round, other)
			ratio, mStatic, m, err := costRatio(&static, &t)
			if err != nil {
				return err
			}
			res.add(other, "ratio", ratio)
			fmt.Fprintf(os.Stderr, "bench: round %d: static %.0f µs, %s %.0f µs per request\n", round, mStatic.cpuPerReq, other, m.cpuPerReq)
		}
		return nil
	}
	if name == "source" {
		fmt.Fprintf(os.Stderr, "bench: round %d: vault-backed and source-backed till together, %d req/s each\n", round, *rate)
		vaulted, fromSource, err := together(targets["till"], targets["sourced"])
		if err != nil {
			return err
		}
		res.add("source", "ratio", fromSource.cpuPerReq/vaulted.cpuPerReq)
		fmt.Fprintf(os.Stderr, "bench: round %d: vault key %.0f µs, source key %.0f µs per request\n", round, vaulted.cpuPerReq, fromSource.cpuPerReq)
		return nil
	}
	if name == "routes" {
		// The two route tables are measured at once, each at the
		// fixed rate: both see the same moment of a shared, noisy
		// machine, so their ratio is steadier than two runs apart.
		fmt.Fprintf(os.Stderr, "bench: round %d: routes-10 and routes-10000 together, %d req/s each\n", round, *rate)
		few, many, err := together(targets["routes-10"], targets["routes-10000"])
		if err != nil {
			return err
		}
		// Two loads share the core: their latencies are not the
		// fixed-rate figure, and only CPU is kept.
		res.add("routes-10", "cpu", few.cpuPerReq)
		res.add("routes-10000", "cpu", many.cpuPerReq)
		res.add("routes", "scale", many.cpuPerReq/few.cpuPerReq)
		fmt.Fprintf(os.Stderr, "bench: round %d: 10 routes %.0f µs, 10,000 routes %.0f µs per request\n", round, few.cpuPerReq, many.cpuPerReq)
		return nil
	}
	t, ok := targets[name]
	if !ok {
		return nil
	}
	fmt.Fprintf(os.Stderr, "bench: round %d: %s at %d req/s\n", round, name, *rate)
	m, err := fixedRate(t, *rate, *dur)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	res.add(name, "cpu", m.cpuPerReq)
	res.add(name, "p50", m.p50)
	res.add(name, "p99", m.p99)
	fmt.Fprintf(os.Stderr, "bench: round %d: %s: %.0f µs per request, p50 %.3f ms, p99 %.3f ms\n", round, name, m.cpuPerReq, m.p50, m.p99)
	if name == "direct" || name == "nginx" || name == "till" {
		if sse, err := firstEvent(t); err == nil {
			res.add(name, "sse", sse)
		} else {
			fmt.Fprintf(os.Stderr, "bench: round %d: %s: first SSE event: %v (not counted)\n", round, name, err)
		}
		if rps, err := throughput(t); err == nil {
			res.add(name, "rps", rps)
			fmt.Fprintf(os.Stderr, "bench: round %d: %s: %.0f req/s saturated\n", round, name, rps)
		} else {
			fmt.Fprintf(os.Stderr, "bench: round %d: %s: throughput: %v (not counted)\n", round, name, err)
		}
	}
	return nil
}

// processes remembers what to stop.
type processes struct{ cmds []*exec.Cmd }

func (p *processes) start(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	p.cmds = append(p.cmds, cmd)
	return nil
}

func (p *processes) stopAll() {
	for _, c := range p.cmds {
		c.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			c.Process.Kill()
		}
	}
}

// tillProc is one running till.
type tillProc struct {
	addr  string
	pid   int
	caPEM []byte // its interception CA, when it intercepts
}

// pinned runs argv on CPU cpu when taskset is there and the machine has
// two cores.
func pinned(cpu int, argv ...string) *exec.Cmd {
	if p, err := exec.LookPath("taskset"); err == nil && runtime.NumCPU() >= 2 {
		argv = append([]string{p, "-c", strconv.Itoa(cpu)}, argv...)
	}
	return exec.Command(argv[0], argv[1:]...)
}

func startTill(procs *processes, bin, work, name, cfg, caFile string, intercept bool, secret ...string) (*tillProc, error) {
	dir := filepath.Join(work, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	if caFile != "" {
		env = append(env, "SSL_CERT_FILE="+caFile)
	}
	tillCmd := func(stdin string, args ...string) error {
		cmd := exec.Command(bin, args...)
		cmd.Dir, cmd.Env, cmd.Stdin = dir, env, strings.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("till %v: %v: %s", args, err, out)
		}
		return nil
	}
	if err := tillCmd(benchKey, "secret", "set", "openai"); err != nil {
		return nil, err
	}
	if len(secret) == 2 { // a --json secret the route names
		if err := tillCmd(secret[1], "secret", "set", secret[0], "--json"); err != nil {
			return nil, err
		}
	}
	t := &tillProc{}
	if intercept {
		if err := tillCmd("", "ca", "init"); err != nil {
			return nil, err
		}
		var err error
		if t.caPEM, err = os.ReadFile(filepath.Join(dir, "till-ca.pem")); err != nil {
			return nil, err
		}
	}
	cmd := pinned(0, bin, "serve", "--listen", "127.0.0.1:0")
	cmd.Dir, cmd.Env = dir, env
	stderr, _ := cmd.StderrPipe()
	if err := procs.start(cmd); err != nil {
		return nil, err
	}
	t.pid = cmd.Process.Pid
	addr := regexp.MustCompile(`"addr":"([^"]+)".*"message":"till listening"`)
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := addr.FindStringSubmatch(sc.Text()); m != nil {
			t.addr = m[1]
			go io.Copy(io.Discard, stderr)
			return t, nil
		}
	}
	return nil, fmt.Errorf("till %s did not start", name)
}

// startNginx runs nginx (one worker, access log on) with the equivalent
// of till's route: prefix stripped, Authorization set, keep-alive upstream.
func startNginx(procs *processes, work, upstreamAddr, upstreamCA string) (string, int, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
			if _, e := os.Stat(p); e == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		return "", 0, errors.New("not installed")
	}
	dir := filepath.Join(work, "nginx")
	os.MkdirAll(dir, 0o755)
	os.Chmod(work, 0o755)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", 0, err
	}
	addr := l.Addr().String()
	l.Close()
	conf := fmt.Sprintf(`worker_processes 1;
daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 4096; }
http {
  access_log %[1]s/access.log;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  upstream up { server %[2]s; keepalive 128; }
  server {
    listen %[3]s;
    keepalive_requests 1000000;
    location /openai/ {
      proxy_pass https://up/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer %[4]s";
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate %[5]s;
      proxy_ssl_name example.com;
      proxy_ssl_session_reuse on;
    }
  }
}
`, dir, upstreamAddr, addr, benchKey, upstreamCA)
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		return "", 0, err
	}
	cmd := pinned(0, bin, "-c", confFile, "-p", dir)
	if err := procs.start(cmd); err != nil {
		return "", 0, err
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, cmd.Process.Pid, nil
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
	return "", 0, fmt.Errorf("did not start: %s", b)
}

// newClient is a keep-alive client; with a till that intercepts, it uses
// that till as its HTTPS proxy and trusts its CA.
// newClient is the load's client. It keeps up to 64 idle connections per
// proxy (wrk's count): the fixed rate needs a few, and a stall of the shared
// machine would otherwise leave every connection it made open to the end of
// the run, each holding about 21 kB in a Go server (net/http's buffers and
// goroutine), which the RSS figures would count.
func newClient(icpt *tillProc) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxIdleConns: 1024, IdleConnTimeout: time.Minute, DisableCompression: true}
	if icpt != nil {
		proxy, _ := url.Parse("http://" + icpt.addr)
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(icpt.caPEM)
		tr.Proxy = http.ProxyURL(proxy)
		tr.TLSClientConfig = &tls.Config{RootCAs: roots}
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// trusting makes c trust the TLS server srv.
func trusting(c *http.Client, srv *httptest.Server) *http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: roots}
	return c
}

// send makes one request to t: a GET, or a POST of t.body.
func send(t *target) error {
	var resp *http.Response
	var err error
	if t.body != "" {
		resp, err = t.client.Post(t.url, "application/json", strings.NewReader(t.body))
	} else {
		resp, err = t.client.Get(t.url)
	}
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// measurement is one fixed-rate run.
type measurement struct {
	cpuPerReq float64 // microseconds of the proxy's CPU per request
	p50, p99  float64 // milliseconds, from the scheduled send time
}

// fixedRate sends rate req/s for d, open loop: each request is scheduled
// at its time whatever the others do, and its latency counts from then, so
// a stall shows in the tail instead of slowing the load (coordinated
// omission).
func fixedRate(t *target, rate int, d time.Duration) (measurement, error) {
	n := int(float64(rate) * d.Seconds())
	interval := time.Second / time.Duration(rate)
	lats := make([]time.Duration, n)
	var failed atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	cpu0 := procCPU(t.pid)
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		if wait := time.Until(at); wait > 0 {
			time.Sleep(wait)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := send(t); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, &err)
			}
			lats[i] = time.Since(at)
		}()
	}
	wg.Wait()
	cpu1 := procCPU(t.pid)
	if f := failed.Load(); f > 0 {
		return measurement{}, fmt.Errorf("%d of %d requests failed, the first with: %v", f, n, *firstErr.Load())
	}
	slices.Sort(lats)
	m := measurement{
		p50: float64(lats[n/2].Microseconds()) / 1000,
		p99: float64(lats[n*99/100].Microseconds()) / 1000,
	}
	if t.pid != 0 {
		m.cpuPerReq = float64((cpu1 - cpu0).Microseconds()) / float64(n)
	}
	return m, nil
}

// together runs fixedRate on a and b at the same time.
func together(a, b *target) (ma, mb measurement, err error) {
	// Both start from one signal, each on a goroutine of its own: when one
	// ran on the caller's goroutine, the other started a little later and
	// came out a few percent cheaper (1.02x against 1.09x for one pair
	// measured in both orders).
	var errA, errB error
	start := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { <-start; ma, errA = fixedRate(a, a.rateOr(*rate), *dur) })
	wg.Go(func() { <-start; mb, errB = fixedRate(b, b.rateOr(*rate), *dur) })
	close(start)
	wg.Wait()
	if errA != nil {
		return ma, mb, fmt.Errorf("%s: %w", a.name, errA)
	}
	if errB != nil {
		return ma, mb, fmt.Errorf("%s: %w", b.name, errB)
	}
	return ma, mb, nil
}

// costRatio measures base and other together twice, in both orders, and
// returns other's CPU per request as a ratio to base's: the geometric
// mean of the two runs' ratios, with the measurements of the second run.
// One order alone leaned by up to 7% between runs, either way (1.02x and
// 1.09x for the same pair), which a change of a few percent drowns in.
func costRatio(base, other *target) (ratio float64, mBase, mOther measurement, err error) {
	if mBase, mOther, err = together(base, other); err != nil {
		return 0, mBase, mOther, err
	}
	first := mOther.cpuPerReq / mBase.cpuPerReq
	if mOther, mBase, err = together(other, base); err != nil {
		return 0, mBase, mOther, err
	}
	return math.Sqrt(first * mOther.cpuPerReq / mBase.cpuPerReq), mBase, mOther, nil
}

// rateOr is the target's own rate, or r.
func (t *target) rateOr(r int) int {
	if t.rate > 0 {
		return t.rate
	}
	return r
}

// throughput saturates the proxy's core with wrk (one thread on the other
// core, 64 connections) and returns requests per second.
func throughput(t *target) (float64, error) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return 0, errors.New("wrk is not installed")
	}
	args := []string{wrk, "-t1", "-c64", "-d" + strconv.Itoa(int(dur.Seconds())) + "s"}
	if t.direct {
		args = append(args, "-H", "Authorization: Bearer "+benchKey)
	}
	cmd := pinned(1, append(args, t.url)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk: %v: %s", err, out)
	}
	m := regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("wrk output: %s", out)
	}
	if bad := regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`).FindSubmatch(out); bad != nil {
		return 0, fmt.Errorf("wrk: %s non-2xx responses", bad[1])
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// firstEvent is the median time to the first Server-Sent Event over 20
// streams.
func firstEvent(t *target) (float64, error) {
	u := strings.Replace(t.url, "/chat/completions", "/sse", 1)
	var times []time.Duration
	for range 20 {
		start := time.Now()
		resp, err := t.client.Get(u)
		if err != nil {
			return 0, err
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		times = append(times, time.Since(start))
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || line != "data: first\n" {
			return 0, fmt.Errorf("first line %q: %v", line, err)
		}
	}
	slices.Sort(times)
	return float64(times[len(times)/2].Microseconds()) / 1000, nil
}

// idleRSS opens n keep-alive connections, sends one request on each, leaves
// them idle and returns the proxy's resident set in kB.
func idleRSS(t *target, n int) (int, error) {
	u, _ := url.Parse(t.url)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
		auth := ""
		if t.direct {
			auth = "Authorization: Bearer " + benchKey + "\r\n"
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", u.RequestURI(), u.Host, auth)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	time.Sleep(500 * time.Millisecond)
	return procStatus(t.pid, "VmRSS"), nil
}

// procCPU is a process's user plus system CPU time, all threads.
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which may hold spaces.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond
}

// procStatus reads a kB field of /proc/PID/status.
func procStatus(pid int, field string) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

// pinSelf moves this process to one CPU, leaving the other to the proxies.
func pinSelf(cpu int) {
	if p, err := exec.LookPath("taskset"); err == nil {
		exec.Command(p, "-a", "-p", "-c", strconv.Itoa(cpu), strconv.Itoa(os.Getpid())).Run()
	}
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// results holds each figure's values per target, one per round.
type results struct {
	mu sync.Mutex
	v  map[string]map[string][]float64
}

func newResults() *results { return &results{v: map[string]map[string][]float64{}} }

func (r *results) add(target, figure string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.v[target] == nil {
		r.v[target] = map[string][]float64{}
	}
	r.v[target][figure] = append(r.v[target][figure], v)
}

// median returns the median and the range of a figure, ok false when
// absent.
func (r *results) median(target, figure string) (med, lo, hi float64, ok bool) {
	vs := r.v[target][figure]
	if len(vs) == 0 {
		return 0, 0, 0, false
	}
	return median(vs), slices.Min(vs), slices.Max(vs), true
}

// compare returns the median over rounds of each round's ratio of a
// target's figure to another's (or difference, with diff): each round
// measures its targets seconds apart, so a comparison within a round sees
// one state of a shared machine, where medians taken apart may mix a slow
// round of one target with a fast round of the other. With a count of
// values that differs, it compares the medians.
func (r *results) compare(target, other, figure string, diff bool) (float64, bool) {
	a, b := r.v[target][figure], r.v[other][figure]
	if len(a) == 0 || len(b) == 0 {
		return 0, false
	}
	if len(a) != len(b) {
		a, b = []float64{median(a)}, []float64{median(b)}
	}
	per := make([]float64, 0, len(a))
	for i := range a {
		switch {
		case diff:
			per = append(per, a[i]-b[i])
		case b[i] != 0:
			per = append(per, a[i]/b[i])
		}
	}
	if len(per) == 0 {
		return 0, false
	}
	return median(per), true
}

// median returns the median of vs (the upper one of an even count).
func median(vs []float64) float64 {
	vs = slices.Clone(vs)
	slices.Sort(vs)
	return vs[len(vs)/2]
}

func (r *results) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "figure\ttarget\tmedian\tmin–max\tvs direct\tvs nginx\tvs till (reverse)\t")
	cell := func(figure, target, unit string) {
		med, lo, hi, ok := r.median(target, figure)
		if !ok {
			return
		}
		ratio := func(other string, diff bool) string {
			v, ok := r.compare(target, other, figure, diff)
			if !ok || other == target {
				return ""
			}
			if diff {
				return fmt.Sprintf("%+.3f %s", v, unit)
			}
			return fmt.Sprintf("%.2f×", v)
		}
		diff := figure == "p50" || figure == "p99" || figure == "sse"
		fmt.Fprintf(tw, "%s\t%s\t%.3f %s\t%.3f–%.3f\t%s\t%s\t%s\t\n", labels[figure], target, med, unit, lo, hi,
			ratio("direct", diff), ratio("nginx", diff), ratio("till", diff))
	}
	all := []string{"direct", "nginx", "till", "intercept", "routes-10", "routes-10000"}
	for _, f := range []struct{ figure, unit string }{
		{"cpu", "µs"}, {"p50", "ms"}, {"p99", "ms"}, {"rps", "req/s"}, {"hwm", "kB"}, {"idle", "kB"}, {"sse", "ms"},
	} {
		for _, t := range all {
			if f.figure == "cpu" && t == "direct" {
				continue
			}
			cell(f.figure, t, f.unit)
		}
	}
	tw.Flush()
	if med, lo, hi, ok := r.median("routes", "scale"); ok {
		fmt.Fprintf(w, "\nroute scale: CPU per request with 10,000 routes is %.2f× that with 10 (median of rounds, %.2f–%.2f; both measured at once)\n", med, lo, hi)
	}
	if med, lo, hi, ok := r.median("usage-json", "ratio"); ok {
		fmt.Fprintf(w, "usage metering, 1 kB JSON answer: %.2f× the CPU per request of the same route unmetered (median of rounds, %.2f–%.2f; measured at once)\n", med, lo, hi)
	}
	if med, lo, hi, ok := r.median("usage-sse", "ratio"); ok {
		fmt.Fprintf(w, "usage metering, 500-event stream: %.2f× the CPU per request of the same route unmetered (median of rounds, %.2f–%.2f; measured at once)\n", med, lo, hi)
	}
	if med, lo, hi, ok := r.median("sigv4", "ratio"); ok {
		fmt.Fprintf(w, "SigV4 signing, 1 kB POST: %.2f× the CPU per request of a static key (median of rounds, %.2f–%.2f; measured at once)\n", med, lo, hi)
	}
	if med, lo, hi, ok := r.median("oauth2", "ratio"); ok {
		fmt.Fprintf(w, "OAuth2 token (cached), 1 kB POST: %.2f× the CPU per request of a static key (median of rounds, %.2f–%.2f; measured at once)\n", med, lo, hi)
	}
	if med, lo, hi, ok := r.median("source", "ratio"); ok {
		fmt.Fprintf(w, "key from a source (cached, refreshed every 1.5 s) vs from the vault: %.2f× the CPU per request (median of rounds, %.2f–%.2f; both measured at once)\n", med, lo, hi)
	}
	if med, lo, hi, ok := r.median("paired", "ratio"); ok {
		fmt.Fprintf(w, "CPU per request, till vs nginx measured at once: %.2f× (median of rounds, %.2f–%.2f)\n", med, lo, hi)
	}
	if med, lo, hi, ok := r.median("paired-post", "ratio"); ok {
		fmt.Fprintf(w, "CPU per POST of a 1 kB chat completion, till vs nginx measured at once: %.2f× (median of rounds, %.2f–%.2f)\n", med, lo, hi)
	}
	if med, lo, hi, ok := r.median("paired-before", "ratio"); ok {
		fmt.Fprintf(w, "CPU per request, till before (-before) vs nginx measured at once: %.2f× (median of rounds, %.2f–%.2f)\n", med, lo, hi)
	}
	if med, lo, hi, ok := r.median("paired-post-before", "ratio"); ok {
		fmt.Fprintf(w, "CPU per POST, till before (-before) vs nginx measured at once: %.2f× (median of rounds, %.2f–%.2f)\n", med, lo, hi)
	}
	if v, ok := r.compare("intercept", "till", "cpu", false); ok {
		fmt.Fprintf(w, "intercept mode: %.2f× reverse mode's CPU per request\n", v)
	}
	fmt.Fprintf(w, "(%d round(s), %d req/s for %v per fixed-rate run, %d idle clients; proxies on CPU 0, load and upstream on CPU 1;\n", *rounds, *rate, *dur, *idle)
	fmt.Fprintln(w, " the vs columns are the median over rounds of each round's ratio or difference)")
}

var labels = map[string]string{
	"cpu":  "CPU per request @ fixed rate",
	"p50":  "latency p50 @ fixed rate",
	"p99":  "latency p99 @ fixed rate",
	"rps":  "throughput, proxy core saturated",
	"hwm":  "peak RSS after the run",
	"idle": "RSS with idle keep-alive clients",
	"sse":  "time to first SSE event",
}
