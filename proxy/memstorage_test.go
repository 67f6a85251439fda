package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tillgw/till/proxy/ca"
)

// TestMemStorage: the in-memory storage answers as certmagic.FileStorage
// does: missing keys are fs.ErrNotExist, a key's folder exists, lists
// and deletes, and a lock is held until it is freed.
func TestMemStorage(t *testing.T) {
	ctx := context.Background()
	s := newMemStorage()
	if _, err := s.Load(ctx, "certificates/a/a.crt"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing key: %v, want fs.ErrNotExist", err)
	}
	for _, k := range []string{"certificates/a/a.crt", "certificates/a/a.key", "certificates/b/b.crt", "other"} {
		if err := s.Store(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := s.Load(ctx, "certificates/a/a.key"); err != nil || string(v) != "certificates/a/a.key" {
		t.Errorf("Load: %q %v", v, err)
	}
	if !s.Exists(ctx, "certificates/a") || s.Exists(ctx, "certificates/c") || s.Exists(ctx, "cert") {
		t.Errorf("Exists: a folder of keys exists, another or a part of a name does not")
	}
	for _, tt := range []struct {
		recursive bool
		want      []string
	}{
		{false, []string{"certificates/a", "certificates/b"}},
		{true, []string{"certificates/a", "certificates/a/a.crt", "certificates/a/a.key", "certificates/b", "certificates/b/b.crt"}},
	} {
		if got, err := s.List(ctx, "certificates", tt.recursive); err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("List(recursive %v): got %q %v, want %q", tt.recursive, got, err, tt.want)
		}
	}
	if _, err := s.List(ctx, "none", true); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("List of nothing: %v, want fs.ErrNotExist", err)
	}
	if ki, err := s.Stat(ctx, "certificates/a/a.crt"); err != nil || !ki.IsTerminal || ki.Size != int64(len("certificates/a/a.crt")) {
		t.Errorf("Stat of a value: %+v %v", ki, err)
	}
	if ki, err := s.Stat(ctx, "certificates/a"); err != nil || ki.IsTerminal {
		t.Errorf("Stat of a folder: %+v %v", ki, err)
	}
	if err := s.Delete(ctx, "certificates/a"); err != nil {
		t.Fatal(err)
	}
	if s.Exists(ctx, "certificates/a/a.crt") || !s.Exists(ctx, "certificates/b/b.crt") {
		t.Errorf("Delete of a folder: removes what is under it, and only that")
	}

	if err := s.Lock(ctx, "issue"); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := s.Lock(short, "issue"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a second Lock while held: %v, want the context's error", err)
	}
	if err := s.Unlock(ctx, "issue"); err != nil {
		t.Fatal(err)
	}
	if err := s.Lock(ctx, "issue"); err != nil {
		t.Errorf("Lock once freed: %v", err)
	}
}

// TestListenerOwnCAWritesNothing: with certificates from till's CA, the
// TLS listener serves without a folder it can write. The vault's folder,
// where Storage points, is read-only in a Kubernetes pod (a Secret
// volume); till then could not start. Here Storage lies under a file, so
// that no one, root included, can make it.
func TestListenerOwnCAWritesNothing(t *testing.T) {
	authority, err := ca.New("listener-test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "till.vault")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	storage := filepath.Join(file, "till-certs")
	tc, obtain := ListenerTLS{Names: []string{"till.internal"}, Authority: authority, Storage: storage}.Config()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := obtain(ctx); err != nil {
		t.Fatalf("obtain: %v", err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tc)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	roots := x509.NewCertPool()
	roots.AddCert(authority.Certificate())
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), &tls.Config{ServerName: "till.internal", RootCAs: roots})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	conn.Close()
}
