package proxy

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRecorderHoldsTheStart: the status and a short body wait in the
// recorder until the response is complete, larger than holdLimit or
// flushed, and 1xx responses go at once.
func TestRecorderHoldsTheStart(t *testing.T) {
	t.Run("short body", func(t *testing.T) {
		rec := httptest.NewRecorder()
		w := &responseRecorder{ResponseWriter: rec, x: &exchange{}}
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(201)
		w.Write([]byte("hello"))
		if rec.Code != 200 || rec.Body.Len() != 0 || w.committed {
			t.Fatalf("sent before the end: %d %q", rec.Code, rec.Body)
		}
		if err := w.commit(); err != nil || rec.Code != 201 || rec.Body.String() != "hello" || w.n != 5 {
			t.Errorf("after commit: %v %d %q, n=%d", err, rec.Code, rec.Body, w.n)
		}
	})
	t.Run("long body", func(t *testing.T) {
		rec := httptest.NewRecorder()
		w := &responseRecorder{ResponseWriter: rec, x: &exchange{}}
		w.Write([]byte(strings.Repeat("a", holdLimit)))
		if w.committed {
			t.Fatalf("committed at holdLimit bytes")
		}
		w.Write([]byte("b"))
		if !w.committed || rec.Code != 200 || rec.Body.Len() != holdLimit+1 || w.n != holdLimit+1 {
			t.Errorf("past holdLimit: committed %v, %d, %d bytes, n=%d", w.committed, rec.Code, rec.Body.Len(), w.n)
		}
	})
	t.Run("flush", func(t *testing.T) {
		rec := httptest.NewRecorder()
		w := &responseRecorder{ResponseWriter: rec, x: &exchange{}}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("data: 1\n\n"))
		w.Flush()
		if !rec.Flushed || rec.Body.String() != "data: 1\n\n" {
			t.Errorf("flush did not send the event: flushed %v, %q", rec.Flushed, rec.Body)
		}
	})
	t.Run("1xx", func(t *testing.T) {
		rec := httptest.NewRecorder()
		w := &responseRecorder{ResponseWriter: rec, x: &exchange{}}
		w.WriteHeader(http.StatusEarlyHints)
		if rec.Code != http.StatusEarlyHints || w.status != 0 {
			t.Errorf("103 held back or taken for the final status: %d, status %d", rec.Code, w.status)
		}
	})
	t.Run("reset", func(t *testing.T) {
		rec := httptest.NewRecorder()
		w := &responseRecorder{ResponseWriter: rec, x: &exchange{}}
		w.Header().Set("Connection", "close")
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(200)
		w.Write([]byte("partial"))
		w.reset()
		writeError(w, "id", apiError{CodeUpstreamUnreachable, "broken"}, false, 0)
		w.commit()
		if rec.Code != 502 || rec.Header().Get("Connection") != "close" || rec.Header().Get("Content-Length") == "1000" ||
			strings.Contains(rec.Body.String(), "partial") {
			t.Errorf("after reset: %d %v %q", rec.Code, rec.Header(), rec.Body)
		}
	})
}
