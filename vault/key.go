package vault

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/tillgw/till/internal/atomicfile"
	"github.com/tillgw/till/internal/regfile"
)

// maxKeyFileSize caps how much of a key file is read.
const maxKeyFileSize = 64 << 10

// scryptWorkFactor is the scrypt cost (log2 N) for passphrase vaults; age's
// default. Tests lower it.
var scryptWorkFactor = 18

// Key decrypts and encrypts the vault: an age X25519 identity read from a key
// file, or an age scrypt passphrase. It has no String method that could print
// the key; fmt shows only which kind of key it is.
//
// The identity and recipient sit behind funcs because fmt, printing an
// unexported field by reflection, shows a func only as an address but may
// expand a pointer to the identity's struct (its raw key bytes).
type Key struct {
	file      string // key file path; empty for a passphrase
	identity  func() age.Identity
	recipient func() (age.Recipient, error)
}

// String names the key's source, never the key.
func (k Key) String() string {
	if k.file == "" {
		return "vault.Key{passphrase}"
	}
	return fmt.Sprintf("vault.Key{key file %q}", k.file)
}

// GoString makes %#v print the same redaction as String.
func (k Key) GoString() string { return k.String() }

// PassphraseKey returns a key that encrypts with age's scrypt passphrase
// recipient. An empty passphrase is an error.
func PassphraseKey(passphrase string) (*Key, error) {
	if passphrase == "" {
		return nil, errors.New("vault passphrase is empty")
	}
	id, err := age.NewScryptIdentity(passphrase)
	if err != nil {
		return nil, fmt.Errorf("vault passphrase: %w", err)
	}
	return &Key{
		identity: func() age.Identity { return id },
		recipient: func() (age.Recipient, error) {
			r, err := age.NewScryptRecipient(passphrase)
			if err != nil {
				return nil, fmt.Errorf("vault passphrase: %w", err)
			}
			r.SetWorkFactor(scryptWorkFactor)
			return r, nil
		},
	}, nil
}

// LoadKeyFile reads an age X25519 identity ("AGE-SECRET-KEY-1...", one per
// file; empty lines and "#" comments allowed). With create set and the file
// absent, it generates one and writes it with mode 0600, creating the folder
// with mode 0700 if needed. A key file readable by others is not refused;
// callers may warn about it.
func LoadKeyFile(path string, create bool) (*Key, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: no key file given", ErrNoKey)
	}
	data, err := readKeyFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		data, err = createKeyFile(path)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: key file %q not found", ErrNoKey, path)
	}
	if err != nil {
		return nil, err
	}
	id, err := parseKeyFile(path, data)
	clear(data)
	if err != nil {
		return nil, err
	}
	recipient := id.Recipient()
	return &Key{
		file:      path,
		identity:  func() age.Identity { return id },
		recipient: func() (age.Recipient, error) { return recipient, nil },
	}, nil
}

func readKeyFile(path string) ([]byte, error) {
	// A regular file only: a named pipe would hold a reload forever.
	data, err := regfile.Read(path, maxKeyFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read the key file: %w", err)
	}
	return data, nil
}

// parseKeyFile reports bad lines by number only: a line may hold a key.
func parseKeyFile(path string, data []byte) (*age.X25519Identity, error) {
	var id *age.X25519Identity
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxKeyFileSize+1)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parsed, err := age.ParseX25519Identity(line)
		if err != nil {
			return nil, fmt.Errorf("key file %q: line %d is not an age X25519 identity (AGE-SECRET-KEY-1...)", path, n)
		}
		if id != nil {
			return nil, fmt.Errorf("key file %q: line %d is a second key; a till key file holds one", path, n)
		}
		id = parsed
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cannot read key file %q: %w", path, err)
	}
	if id == nil {
		return nil, fmt.Errorf("key file %q holds no key (want a line AGE-SECRET-KEY-1...)", path)
	}
	return id, nil
}

// createKeyFile writes a new identity to a temp file and links it into
// place, which fails if the path exists: two processes racing to create it
// cannot overwrite each other's key (the loser reads the winner's file),
// and no one reads it empty or half written.
func createKeyFile(path string) ([]byte, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create key file %q: %w", path, err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, fmt.Errorf("cannot generate key for %q: %w", path, err)
	}
	data := fmt.Appendf(nil, "# till vault key, created %s\n# public key: %s\n%s\n",
		time.Now().UTC().Format(time.RFC3339), id.Recipient(), id)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("cannot create key file %q: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), path)
	}
	if errors.Is(err, fs.ErrExist) {
		clear(data)
		return readKeyFile(path)
	}
	if err != nil {
		clear(data)
		return nil, fmt.Errorf("cannot write key file %q: %w", path, err)
	}
	atomicfile.SyncDir(dir)
	return data, nil
}
