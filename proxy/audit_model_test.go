package proxy

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
)

// TestRecordedModel: a model name stays in the record as the app sent
// it; one that holds a credential is replaced whole by notShown.
func TestRecordedModel(t *testing.T) {
	const hand = "till_handmade7"
	cs := clientSet{{name: "web", digest: sha256.Sum256([]byte(hand))}}
	forms := echoForms([]string{"plainroutekey0123456789abcdef"})
	tests := []struct{ model, want string }{
		{"", ""},
		{"gpt-4o-mini", "gpt-4o-mini"},
		{"claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20250929"},
		{"models/gemini-2.5-pro", "models/gemini-2.5-pro"},
		{"ft:gpt-4o-mini-2024-07-18:acme::A1b2C3d4", "ft:gpt-4o-mini-2024-07-18:acme::A1b2C3d4"},
		{"meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo", "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo"},
		{"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0",
			"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0"},
		{"till_ModelFieldToken0123456789abcdefghijKLMNO", notShown},
		{"x/till%5FModelFieldToken0123456789abcdefghijKLMNO", notShown},
		{hand, notShown},
		{"sk-ant-api03-Ab12Cd34Ef56Gh78Ij90Kl12", notShown},
		{"models/AIzaSyAb12Cd34Ef56Gh78Ij90Kl12Mn34Op5", notShown},
		{"plainroutekey0123456789abcdef", notShown},
		{"gpt-plainroutekey0123456789abcdef", notShown},
	}
	for _, tt := range tests {
		if got := recordedModel(tt.model, cs, forms); got != tt.want {
			t.Errorf("recordedModel(%q): got %q, want %q", tt.model, got, tt.want)
		}
	}
}

// TestHiddenModelStillPriced: a model whose name the records hide (a
// fine-tune whose suffix looks random, priced by the table's glob) is
// still priced as itself when its answer tells no usage: the budget is
// charged what the request reserved, not $0 for a name no table prices.
func TestHiddenModelStillPriced(t *testing.T) {
	const model = "ft:gpt-4o-mini-2024-07-18:acme:Xk9Lm2Np4Qr7St1Uv3Wx5Yz8Ab0Cd6Ef:B4cD5eF6"
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"chatcmpl-1"}`)
	}))
	defer up.Close()
	dir := t.TempDir()
	prices := "models:\n  \"ft:gpt-4o-mini-2024-07-18:acme:*\": {input: 1, output: 2}\n"
	if err := os.WriteFile(filepath.Join(dir, "prices.yaml"), []byte(prices), 0o600); err != nil {
		t.Fatal(err)
	}
	y := "version: 1\nprices: {file: prices.yaml}\nroutes:\n  - {name: openai, preset: openai, upstream: " + up.URL + "}\n" +
		"budgets:\n  - {name: b, window: 1d, usd: 100}\n"
	parsed, err := config.Parse("till.yaml", []byte(y), dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := parsed.WithPrices()
	if err != nil {
		t.Fatal(err)
	}
	buf := &lockedBuffer{}
	gw := New(NewSnapshot(cfg, secrets(time.Now())), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
	body := fmt.Sprintf(`{"model":%q,"max_tokens":1000000,"messages":[]}`, model)
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("POST", "/openai/v1/chat/completions", strings.NewReader(body)))
	if w.Code != http.StatusOK {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
	if recs := buf.records(t); recs[0]["model"] != notShown {
		t.Errorf("record's model %q, want %q", recs[0]["model"], notShown)
	}
	// 1,000,000 output tokens reserved at $2 a million.
	if _, usd := budgetUsed(t, gw); usd < 2 {
		t.Errorf("the budget counted $%v; want at least $2", usd)
	}
}

// TestPathModelHiddenInThePathToo: on a Gemini route the model is a part
// of the path's segment (models/NAME:method). A client's token there,
// made by hand, is refused as a whole segment is, before the upstream;
// a key there, which the record's model hides, is not in its path.
func TestPathModelHiddenInThePathToo(t *testing.T) {
	const heldKey = "AIzaSyAb12Cd34Ef56Gh78Ij90Kl12Mn34Op5"
	var reached atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		io.Copy(io.Discard, r.Body)
	}))
	defer up.Close()
	gw, buf := newTestGateway(t, "version: 1\nclients:\n  - {name: web, token_sha256: "+handMadeDigest()+"}\n"+
		"routes:\n  - {name: gemini, preset: gemini, upstream: {{UP}}, secret: openai, clients: [web]}\n", up.URL, secrets(time.Now()))
	post := func(model string) int {
		r := httptest.NewRequest("POST", "/gemini/v1beta/models/"+model+":generateContent", strings.NewReader(`{"contents":[]}`))
		r.Header.Set("X-Till-Token", handMadeToken)
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, r)
		return w.Code
	}
	if code := post(handMadeToken); code != http.StatusBadRequest || reached.Load() != 0 {
		t.Errorf("a hand-made token as the path's model: got %d (upstream reached: %d), want 400 before it", code, reached.Load())
	}
	for _, key := range []string{heldKey, testKey} {
		post(key)
	}
	recs := buf.records(t)
	for _, r := range recs[1:] {
		if r["model"] != notShown {
			t.Errorf("record's model %q, want %q", r["model"], notShown)
		}
	}
	for _, s := range []string{"made-by-hand", heldKey, testKey} {
		if strings.Contains(buf.String(), s) {
			t.Errorf("a record holds %q: %s", s, buf.String())
		}
	}
}

// TestRecordedPathAllocatesNothing: every request's path is judged for a
// client's token before it is recorded; one with escapes and no token
// (a Bedrock model ARN's) costs no allocation.
func TestRecordedPathAllocatesNothing(t *testing.T) {
	cs := clientSet{{name: "web", digest: sha256.Sum256([]byte(handMadeToken))}}
	const path = "/bedrock/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude/invoke"
	if n := testing.AllocsPerRun(100, func() { recordedPath(path, cs) }); n != 0 {
		t.Errorf("got %v allocations, want 0", n)
	}
}
