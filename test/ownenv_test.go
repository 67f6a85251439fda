package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOwnSecretsNotInherited: a program a library starts for till (the
// AWS SDK's credential_process, which takes the process's environment
// as it is) never sees till's own secrets: the vault passphrase, the
// admin token, a client token.
func TestOwnSecretsNotInherited(t *testing.T) {
	dir := t.TempDir()
	seen := filepath.Join(dir, "seen")
	helper := filepath.Join(dir, "creds")
	if err := os.WriteFile(helper, []byte("#!/bin/sh\nenv > "+seen+"\necho not json\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	profile := filepath.Join(dir, "aws-config")
	if err := os.WriteFile(profile, []byte("[default]\ncredential_process = "+helper+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := `version: 1
sources:
  - {name: aws, type: aws_secretsmanager, region: eu-west-1, endpoint: "http://127.0.0.1:9"}
routes:
  - {name: openai, preset: openai, secret: "aws:openai-key"}
`
	if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	passphrase, admin, token := "passphrase-"+strings.Repeat("p7", 12), "admin-"+strings.Repeat("a9", 16), "till_"+strings.Repeat("t3", 16)
	env := []string{"AWS_CONFIG_FILE=" + profile, "TILL_PASSPHRASE=" + passphrase, "TILL_ADMIN_TOKEN=" + admin, "TILL_TOKEN=" + token}
	for _, args := range [][]string{{"secret", "set", "other"}, {"check"}} {
		runTill(t, dir, "sk-other-0123456789abcdef", env, args...)
	}
	b, err := os.ReadFile(seen)
	if err != nil {
		t.Fatalf("the credential_process did not run: %v", err)
	}
	if !strings.Contains(string(b), "AWS_CONFIG_FILE=") {
		t.Fatalf("the helper's environment lacks what it needs:\n%s", b)
	}
	for name, v := range map[string]string{"TILL_PASSPHRASE": passphrase, "TILL_ADMIN_TOKEN": admin, "TILL_TOKEN": token} {
		if strings.Contains(string(b), v) {
			t.Errorf("the credential_process saw %s", name)
		}
	}
}
