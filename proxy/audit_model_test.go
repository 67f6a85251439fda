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
