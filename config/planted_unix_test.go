//go:build unix

package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPlantedFilesRefused: in a folder where every user may add files
// (/tmp: its sticky bit keeps them from replacing another's file, not
// from adding one), a config, vault or key file that neither root nor
// the user running till owns is refused. Another user may have put it
// there for till to find: root running "till secret set" in such a
// folder stored its key in that user's vault, under that user's key,
// and left the vault theirs (as it keeps any vault's owner), so they
// read it; and a config put there chose where keys were sent. Files of
// root's or till's own user, or in a folder of one's own, are used as
// before.
func TestPlantedFilesRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root can give a file to another user")
	}
	const other = 65534
	for _, tt := range []struct {
		name    string
		shared  bool // the folder is every user's, sticky
		owner   int  // of the file named by which
		which   string
		refused string
	}{
		{name: "another user's config in a shared folder", shared: true, owner: other, which: "config", refused: "till.yaml is owned by uid 65534"},
		{name: "another user's vault in a shared folder", shared: true, owner: other, which: "vault", refused: "till.vault, of vault.path, is owned by uid 65534"},
		{name: "another user's key in a shared folder", shared: true, owner: other, which: "key", refused: "till.key, of vault.key_file, is owned by uid 65534"},
		{name: "root's files in a shared folder", shared: true, owner: 0, which: "key"},
		{name: "another user's key in a folder of root's", owner: other, which: "key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "shared")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			files := map[string]string{"config": "till.yaml", "vault": "till.vault", "key": "till.key"}
			for _, name := range files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte("version: 1\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chown(filepath.Join(dir, files[tt.which]), tt.owner, tt.owner); err != nil {
				t.Fatal(err)
			}
			if tt.shared {
				if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
					t.Fatal(err)
				}
			}
			c := &Config{Vault: Vault{Path: filepath.Join(dir, "till.vault"), KeyFile: filepath.Join(dir, "till.key")}}
			_, err := CheckFileModes(filepath.Join(dir, "till.yaml"), c)
			switch {
			case tt.refused != "" && (err == nil || !strings.Contains(err.Error(), tt.refused) || !strings.Contains(err.Error(), "every user can add files")):
				t.Errorf("got %v, want %q", err, tt.refused)
			case tt.refused == "" && err != nil:
				t.Errorf("refused: %v", err)
			}
			if tt.which != "config" {
				// Without a config file (the built-in defaults), the
				// vault and key are checked alone.
				if err2 := CheckVaultModes(c); (err2 == nil) != (tt.refused == "") {
					t.Errorf("CheckVaultModes: got %v", err2)
				}
			}
		})
	}
}
