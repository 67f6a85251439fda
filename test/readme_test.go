//go:build linux

package test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The README's commands are run by TestReadme so that they cannot drift
// from what till does. A fenced sh block preceded by
//
//	<!-- runnable: SESSION -->
//
// is run; the blocks of one session run in document order as one bash
// script (bash -euo pipefail) in a fresh folder, so a later block sees the
// files and the background till of an earlier one. A fenced block preceded
// by <!-- output --> right after a runnable block is the output that block
// must print: each of its non-empty lines, with runs of spaces collapsed,
// must appear in order in the block's stdout, where "..." matches anything.
//
// Each session runs in a private network and mount namespace (unshare -n
// -m, so root): till can listen on 127.0.0.1:8080 as the README says
// without racing anything else on the machine, and /etc/hosts maps the
// providers' names to a local fake TLS upstream listening on 127.0.0.1:443
// inside that namespace, trusted through SSL_CERT_FILE. The blocks run
// exactly as printed, with till on PATH and OPENAI_API_KEY set to a test
// key; nothing in them is rewritten.

// readmeHosts are the provider names the fake upstream answers for.
var readmeHosts = []string{"api.openai.com", "api.anthropic.com"}

// readmeUpstreamSessions are the sessions that must reach the upstream,
// with the key attached.
var readmeUpstreamSessions = []string{"quickstart", "forward"}

type readmeBlock struct {
	line    int // line of the opening fence in README.md
	session string
	text    string
	want    string // expected output, if any
}

var (
	runnableMark = regexp.MustCompile(`^<!--\s*runnable:\s*([a-z0-9-]+)\s*-->$`)
	outputMark   = regexp.MustCompile(`^<!--\s*output\s*-->$`)
)

// readmeBlocks extracts the marked blocks of the README at path.
func readmeBlocks(t *testing.T, path string) []*readmeBlock {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	var blocks []*readmeBlock
	// fence reads the fenced block opening at line i (0-based) and returns
	// its body and the index of its closing fence.
	fence := func(i int, info string) (string, int) {
		if i >= len(lines) || !strings.HasPrefix(lines[i], "```") {
			t.Fatalf("README.md:%d: a mark must be followed at once by a fenced block", i)
		}
		if info != "" && strings.TrimSpace(strings.TrimPrefix(lines[i], "```")) != info {
			t.Fatalf("README.md:%d: a runnable block must be a ```%s block", i+1, info)
		}
		var body []string
		for j := i + 1; j < len(lines); j++ {
			if strings.HasPrefix(lines[j], "```") {
				return strings.Join(body, "\n") + "\n", j
			}
			body = append(body, lines[j])
		}
		t.Fatalf("README.md:%d: fenced block never closes", i+1)
		return "", 0
	}
	lastFence := -1 // closing fence of the last runnable block
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if m := runnableMark.FindStringSubmatch(line); m != nil {
			text, end := fence(i+1, "sh")
			blocks = append(blocks, &readmeBlock{line: i + 2, session: m[1], text: text})
			lastFence, i = end, end
			continue
		}
		if outputMark.MatchString(line) {
			if len(blocks) == 0 || strings.TrimSpace(strings.Join(lines[lastFence+1:i], "")) != "" || blocks[len(blocks)-1].want != "" {
				t.Fatalf("README.md:%d: an output block must follow a runnable block, with only blank lines between", i+1)
			}
			text, end := fence(i+1, "")
			blocks[len(blocks)-1].want = text
			i = end
			continue
		}
		if strings.Contains(line, "runnable") && strings.HasPrefix(line, "<!--") {
			t.Fatalf("README.md:%d: malformed mark %q (want <!-- runnable: SESSION -->)", i+1, line)
		}
	}
	return blocks
}

func TestReadme(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the README's sessions; not in -short")
	}
	if err := exec.Command("unshare", "-n", "-m", "true").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("unshare -n -m: %v (the README test needs network and mount namespaces)", err)
		}
		t.Skipf("unshare -n -m: %v (run as root to run the README's commands)", err)
	}
	blocks := readmeBlocks(t, "../README.md")
	var order []string
	sessions := map[string][]*readmeBlock{}
	for _, b := range blocks {
		if sessions[b.session] == nil {
			order = append(order, b.session)
		}
		sessions[b.session] = append(sessions[b.session], b)
	}
	for _, name := range readmeUpstreamSessions {
		if sessions[name] == nil {
			t.Fatalf("README.md has no runnable session %q", name)
		}
	}
	for _, name := range order {
		t.Run(name, func(t *testing.T) { runReadmeSession(t, name, sessions[name]) })
	}
}

// runReadmeSession runs one session's blocks as one script and checks
// their exit status, their output and what the upstream received.
func runReadmeSession(t *testing.T, name string, blocks []*readmeBlock) {
	root := t.TempDir()
	work, bin, home := filepath.Join(root, "work"), filepath.Join(root, "bin"), filepath.Join(root, "home")
	for _, d := range []string{work, bin, home} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(tillBin, filepath.Join(bin, "till")); err != nil {
		t.Fatal(err)
	}
	key := "sk-readme-" + readmeRandomHex(t, 16)
	suiteLeaks.key(key)

	var script strings.Builder
	script.WriteString("trap 'for p in $(jobs -p); do kill \"$p\" 2>/dev/null || true; done; wait || true' EXIT\n")
	for _, b := range blocks {
		fmt.Fprintf(&script, "printf '\\n@@README.md:%d@@\\n'; printf '\\n@@README.md:%d@@\\n' >&2\n", b.line, b.line)
		script.WriteString(b.text)
	}
	scriptFile := filepath.Join(root, "script.sh")
	hostsFile := filepath.Join(root, "hosts")
	certFile := filepath.Join(root, "upstream-ca.pem")
	base, _ := os.ReadFile("/etc/hosts")
	hosts := string(base) + "\n127.0.0.1 " + strings.Join(readmeHosts, " ") + "\n"
	cert := readmeCert(t, certFile)
	for file, content := range map[string]string{scriptFile: script.String(), hostsFile: hosts} {
		if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The preamble, run as root in the new namespaces: map the providers
	// to loopback, and wait (fd 3, fd 4) until the test has brought up
	// loopback and the fake upstream listens there before running the
	// README's commands.
	const preamble = `set -euo pipefail
mount --bind "$1" /etc/hosts
echo ready >&3
exec 3>&-
read -r _ <&4
exec 4<&-
exec bash -euo pipefail "$2"`
	readyR, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	goR, goW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdoutFile, stderrFile := filepath.Join(root, "stdout"), filepath.Join(root, "stderr")
	stdout, err := os.Create(stdoutFile)
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(stderrFile)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "-n", "-m", "--", "bash", "-c", preamble, "readme", hostsFile, scriptFile)
	cmd.Dir = work
	cmd.Env = []string{
		"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME=" + home,
		"SSL_CERT_FILE=" + certFile,
		"OPENAI_API_KEY=" + key,
	}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.ExtraFiles = []*os.File{readyW, goR}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	goR.Close()
	// Whatever a block left running in the background ends with the test.
	defer func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }()

	if line, err := bufio.NewReader(readyR).ReadString('\n'); err != nil || line != "ready\n" {
		_ = cmd.Wait()
		t.Fatalf("namespace setup failed: %q %v\nstderr:\n%s", line, err, readmeReadFile(stderrFile))
	}
	readyR.Close()
	up := readmeUpstream(t, cmd.Process.Pid, cert)
	goW.Write([]byte("go\n"))
	goW.Close()

	err = cmd.Wait()
	out, errOut := readmeReadFile(stdoutFile), readmeReadFile(stderrFile)
	suiteLeaks.text("README session "+name+" stdout", out)
	suiteLeaks.text("README session "+name+" stderr", errOut)
	if err != nil {
		t.Fatalf("README session %q failed: %v (the failing block is the last README.md:LINE marker below)\nstdout:\n%s\nstderr:\n%s", name, err, out, errOut)
	}

	segments := splitReadmeOutput(out)
	for _, b := range blocks {
		if b.want == "" {
			continue
		}
		if missing := readmeMatchOutput(segments[b.line], b.want); missing != "" {
			t.Errorf("README.md:%d: output lacks %q\ngot:\n%s", b.line, missing, segments[b.line])
		}
	}

	for _, s := range readmeUpstreamSessions {
		if s != name {
			continue
		}
		got := up.requests()
		if len(got) == 0 {
			t.Fatalf("session %q: the upstream received no request\nstdout:\n%s\nstderr:\n%s", name, out, errOut)
		}
		for _, r := range got {
			if auth := r.Header.Get("Authorization"); auth != "Bearer "+key {
				t.Errorf("session %q: %s %s reached the upstream with Authorization %q, want the stored key", name, r.Method, r.Path, auth)
			}
		}
	}
}

// readmeUpstream starts the fake provider: a TLS server answering like
// OpenAI's API, listening on 127.0.0.1:443 in the network namespace of
// process pid.
func readmeUpstream(t *testing.T, pid int, cert tls.Certificate) *upstream {
	t.Helper()
	ln, err := listenInNetns(pid, "127.0.0.1:443")
	if err != nil {
		t.Fatalf("listen in the session's namespace: %v", err)
	}
	u := &upstream{}
	srv := httptest.NewUnstartedServer(u.recorder(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/chat/completions") {
			fmt.Fprint(w, `{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}`)
			return
		}
		fmt.Fprint(w, `{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","owned_by":"system"}]}`)
	})))
	srv.Listener.Close()
	srv.Listener = ln
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	u.Server = srv
	return u
}

// listenInNetns opens a TCP listener inside the network namespace of
// process pid: a socket belongs to the namespace of the thread that made
// it, so a locked thread enters the namespace, listens, and is then
// discarded (its goroutine ends still locked).
func listenInNetns(pid int, addr string) (net.Listener, error) {
	type result struct {
		ln  net.Listener
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/ns/net")
		if err != nil {
			done <- result{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{nil, fmt.Errorf("setns: %w", err)}
			return
		}
		if err := loopbackUp(); err != nil {
			done <- result{nil, fmt.Errorf("bring up lo: %w", err)}
			return
		}
		ln, err := net.Listen("tcp", addr)
		done <- result{ln, err}
	}()
	r := <-done
	return r.ln, r.err
}

// loopbackUp brings up the loopback interface of the calling thread's
// network namespace (a new one starts with it down).
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// readmeCert makes a self-signed certificate for the provider names and
// writes it to file, for SSL_CERT_FILE.
func readmeCert(t *testing.T, file string) tls.Certificate {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "till README test upstream"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		DNSNames:              readmeHosts,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
}

// splitReadmeOutput splits a session's stdout at the block markers, by
// the README line of each block.
func splitReadmeOutput(out string) map[int]string {
	segments := map[int]string{}
	marker := regexp.MustCompile(`(?m)^@@README\.md:(\d+)@@$`)
	idx := marker.FindAllStringSubmatchIndex(out, -1)
	for i, m := range idx {
		line, _ := strconv.Atoi(out[m[2]:m[3]])
		end := len(out)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		segments[line] = out[m[1]:end]
	}
	return segments
}

// readmeMatchOutput reports the first expected line that is not in got (in
// order, spaces collapsed, "..." a wildcard), or "" when all are.
func readmeMatchOutput(got, want string) string {
	space := regexp.MustCompile(`[ \t]+`)
	var gotLines []string
	for _, l := range strings.Split(got, "\n") {
		gotLines = append(gotLines, strings.TrimSpace(space.ReplaceAllString(l, " ")))
	}
	next := 0
	for _, w := range strings.Split(want, "\n") {
		w = strings.TrimSpace(space.ReplaceAllString(w, " "))
		if w == "" {
			continue
		}
		parts := strings.Split(w, "...")
		for i := range parts {
			parts[i] = regexp.QuoteMeta(parts[i])
		}
		re := regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
		found := false
		for ; next < len(gotLines); next++ {
			if re.MatchString(gotLines[next]) {
				found, next = true, next+1
				break
			}
		}
		if !found {
			return w
		}
	}
	return ""
}

func readmeReadFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func readmeRandomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
