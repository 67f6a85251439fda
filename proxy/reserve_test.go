package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tillgw/till/vault"
)

// parallelUpstream answers every request with the usage out(body) gives, once
// all wantInFlight requests arrived (or after a second), so that the
// requests till lets by are all in flight at once. It counts the requests
// that reached it.
func parallelUpstream(t *testing.T, wantInFlight int32, answer func(body string) string) (*httptest.Server, *atomic.Int32) {
	var arrived atomic.Int32
	all := make(chan struct{})
	var once sync.Once
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if arrived.Add(1) >= wantInFlight {
			once.Do(func() { close(all) })
		}
		select {
		case <-all:
		case <-time.After(time.Second):
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer(string(b)))
	}))
	t.Cleanup(up.Close)
	return up, &arrived
}

// postParallel posts body n times at once to url and returns how many got
// 200.
func postParallel(t *testing.T, n int, url, body string) int32 {
	var wg sync.WaitGroup
	var ok atomic.Int32
	for range n {
		wg.Go(func() {
			res, err := http.Post(url, "application/json", strings.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == 200 {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	return ok.Load()
}

// TestChoicesReserved: a request asking for n answers (OpenAI's n, legacy
// best_of, Gemini's candidateCount) may produce n times its max_tokens,
// and reserves that: of ten parallel ones with max_tokens 100 and n 10
// under a budget of 1,000 tokens, one goes.
func TestChoicesReserved(t *testing.T) {
	for _, tt := range []struct {
		name, route, path, body, answer string
	}{
		{"openai n", "openai", "/openai/v1/chat/completions",
			`{"model":"gpt-4o-mini","n":10,"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`,
			`{"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1000}}`},
		{"openai best_of", "openai", "/openai/v1/completions",
			`{"model":"gpt-4o-mini","best_of":10,"max_tokens":100,"prompt":"hi"}`,
			`{"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1000}}`},
		{"gemini candidateCount", "gemini", "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
			`{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"candidateCount":10,"maxOutputTokens":100}}`,
			`{"candidates":[],"modelVersion":"gemini-2.5-flash","usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":1000}}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			const n = 10
			up, arrived := parallelUpstream(t, n, func(string) string { return tt.answer })
			y := "version: 1\nroutes:\n  - {name: " + tt.route + ", preset: " + tt.route + ", upstream: {{UP}}}\nbudgets:\n  - {name: b, window: 1h, tokens: 1000}\n"
			now := time.Now()
			gw, _ := newTestGateway(t, y, up.URL, map[string]vault.Secret{tt.route: vault.NewSecret(tt.route, testKey, now)})
			srv := httptest.NewServer(gw)
			defer srv.Close()
			ok := postParallel(t, n, srv.URL+tt.path, tt.body)
			used, _ := budgetUsed(t, gw)
			if ok > 1 {
				t.Errorf("%d of %d parallel requests each able to make 10 x 100 output tokens let by under a 1,000-token budget (%d upstream); %v tokens counted: overshoot %v",
					ok, n, arrived.Load(), used, used-1000)
			}
		})
	}
}

// TestRetryAfterWhileOnlyReserved: a budget held only by a request in
// flight (its reservation, nothing spent) frees when that request ends,
// not when the window does: the app is told to retry in a second, not in
// a day.
func TestRetryAfterWhileOnlyReserved(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		<-release
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":5}}`)
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\nbudgets:\n  - {name: b, window: 1d, tokens: 1000}\n"
	gw, _ := newTestGateway(t, y, up.URL, map[string]vault.Secret{"openai": vault.NewSecret("openai", testKey, time.Now())})
	srv := httptest.NewServer(gw)
	defer srv.Close()
	post := func() *http.Response {
		res, err := http.Post(srv.URL+"/openai/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"gpt-4o-mini","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res
	}
	first := make(chan *http.Response)
	go func() { first <- post() }()
	<-arrived
	res := post()
	retry, _ := strconv.Atoi(res.Header.Get("Retry-After"))
	close(release)
	if r := <-first; r.StatusCode != 200 {
		t.Fatalf("first request: %d", r.StatusCode)
	}
	go func() { <-arrived }()
	if r := post(); r.StatusCode != 200 {
		t.Fatalf("once the first settled: %d", r.StatusCode)
	}
	if res.StatusCode != 429 || retry != 1 {
		t.Errorf("a budget held only by a reservation answered %d with Retry-After %ds, want 429 and 1s: the next request went at once", res.StatusCode, retry)
	}
}
