package vault

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"
	"github.com/tillgw/till/internal/atomicfile"
	"github.com/tillgw/till/internal/regfile"
)

// maxVaultSize caps how much of a vault file Load reads.
const maxVaultSize = 16 << 20

var (
	// ErrWrongKey means the vault could not be decrypted with the key given.
	ErrWrongKey = errors.New("wrong key or not a till vault")
	// ErrCorrupted means the vault file is damaged or is not a till vault.
	ErrCorrupted = errors.New("vault is corrupted")
	// ErrNotFound is wrapped by Remove when the secret is absent.
	ErrNotFound = errors.New("not found")
	// ErrNoKey means there is no key to open the vault with: none was
	// given, or the key file named does not exist.
	ErrNoKey = errors.New("no vault key")
	// ErrLocked means another process held the vault's lock for longer
	// than Update waits.
	ErrLocked = atomicfile.ErrLocked
)

// A WrongKeyError reports a key that cannot open the vault, and how the
// vault is encrypted, so that a caller can say which key to give instead.
// errors.Is(err, ErrWrongKey) holds for it.
type WrongKeyError struct {
	// Path is the vault file.
	Path string
	// KeyFile is the key file tried; "" when the key was a passphrase.
	KeyFile string
	// VaultPassphrase is true when the vault is encrypted with a
	// passphrase, false when with a key file.
	VaultPassphrase bool
}

// Error says which key failed and, when the kinds differ, which kind the
// vault needs; it names a key file, never a key.
func (e *WrongKeyError) Error() string {
	switch key := e.KeyFile != ""; {
	case e.VaultPassphrase && key:
		return fmt.Sprintf("%s: cannot decrypt with key file %q: %v: the vault is encrypted with a passphrase", e.Path, e.KeyFile, ErrWrongKey)
	case !e.VaultPassphrase && !key:
		return fmt.Sprintf("%s: cannot decrypt with a passphrase: %v: the vault is encrypted with a key file", e.Path, ErrWrongKey)
	case e.VaultPassphrase:
		return fmt.Sprintf("%s: cannot decrypt with the passphrase: %v", e.Path, ErrWrongKey)
	}
	return fmt.Sprintf("%s: cannot decrypt with key file %q: %v", e.Path, e.KeyFile, ErrWrongKey)
}

// Unwrap makes errors.Is(err, ErrWrongKey) hold.
func (e *WrongKeyError) Unwrap() error { return ErrWrongKey }

// lockTimeout is how long Update waits for another writer.
var lockTimeout = 10 * time.Second

// beforeRename runs after the new vault is written to tmp and before tmp
// replaces the vault; tests set it to simulate a crash in that window.
var beforeRename = func(tmp string) error { return nil }

// File is the encrypted vault file. Its methods are safe for concurrent use,
// also by several processes.
type File struct {
	path string
	key  *Key
}

// Open returns the vault at path, encrypted with key. It does not touch the
// file; Load and Update do.
func Open(path string, key *Key) *File {
	return &File{path: path, key: key}
}

// Path returns the vault file's path.
func (f *File) Path() string { return f.path }

// Exists reports whether the vault file exists.
func (f *File) Exists() (bool, error) {
	_, err := os.Stat(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s: %w", f.path, err)
	}
	return true, nil
}

// Load decrypts and decodes the vault. A missing file is an empty vault; use
// Exists to tell the two apart. Load never modifies the file, but removes
// the temp files a killed writer left beside it (see removeLeftovers).
func (f *File) Load() (map[string]Secret, error) {
	f.sweepLeftovers()
	return f.load()
}

// load is Load without the sweep, for Update, which holds the lock.
func (f *File) load() (map[string]Secret, error) {
	if f.key == nil {
		return nil, fmt.Errorf("%s: %w", f.path, ErrNoKey)
	}
	// A regular file only: a named pipe would hold a reload forever.
	data, err := regfile.Read(f.path, maxVaultSize)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]Secret{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read the vault: %w", err)
	}
	plain, err := f.decrypt(data)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	secrets, err := decode(plain)
	if errors.Is(err, errVersion) {
		return nil, fmt.Errorf("%s: %w", f.path, err)
	}
	if err != nil {
		return nil, f.corrupted(err)
	}
	return secrets, nil
}

// ageReader reads an age file, armored or binary.
func ageReader(data []byte) io.Reader {
	var src io.Reader = bytes.NewReader(data)
	if bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte(armor.Header)) {
		src = armor.NewReader(src)
	}
	return src
}

// SealedWithPassphrase reports whether the vault file at path exists and
// is encrypted with a passphrase rather than to a key file. It needs no
// key: the file's header says how its file key is wrapped, and a key
// made for the question matches none of it.
func SealedWithPassphrase(path string) bool {
	data, err := regfile.Read(path, maxVaultSize)
	if err != nil {
		return false
	}
	probe, err := age.GenerateX25519Identity()
	if err != nil {
		return false
	}
	_, err = age.Decrypt(ageReader(data), probe)
	var noMatch *age.NoIdentityMatchError
	return errors.As(err, &noMatch) && slices.Contains(noMatch.StanzaTypes, "scrypt")
}

func (f *File) corrupted(err error) error {
	return fmt.Errorf("%s: %w: %v; restore it from a backup", f.path, ErrCorrupted, err)
}

// decrypt opens the age file (armored or binary) and explains a key
// mismatch by the recipient types the file was encrypted to.
func (f *File) decrypt(data []byte) ([]byte, error) {
	r, err := age.Decrypt(ageReader(data), f.key.identity())
	var noMatch *age.NoIdentityMatchError
	switch {
	case errors.As(err, &noMatch):
		return nil, &WrongKeyError{Path: f.path, KeyFile: f.key.file, VaultPassphrase: slices.Contains(noMatch.StanzaTypes, "scrypt")}
	case err != nil:
		// age's own message may quote the file's first bytes, which, for
		// a file named as the vault by mistake, can be a key.
		if !bytes.HasPrefix(data, []byte("age-encryption.org/")) && !bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte(armor.Header)) {
			return nil, f.corrupted(errors.New("not an age-encrypted file (does vault.path name the vault?)"))
		}
		return nil, f.corrupted(errors.New("its age header cannot be read (damaged, or cut short)"))
	}
	plain, err := io.ReadAll(io.LimitReader(r, maxVaultSize+1))
	if err != nil {
		clear(plain)
		return nil, f.corrupted(errors.New("its encrypted data is damaged or cut short"))
	}
	return plain, nil
}

// leftovers lists the temp files beside the vault (see replace), by
// name: a glob would read "[", "*" and "?" in the folder's path.
func (f *File) leftovers() []string {
	real := f.real()
	dir, prefix := filepath.Dir(real), "."+filepath.Base(real)+".tmp-"
	entries, _ := os.ReadDir(dir)
	var files []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	return files
}

// removeLeftovers deletes temp files that a writer killed between writing
// and renaming left behind: each is an encrypted copy of an older vault,
// holding keys since rotated. Called with the lock held, so no write is in
// progress.
func (f *File) removeLeftovers() {
	for _, l := range f.leftovers() {
		_ = os.Remove(l)
	}
}

// sweepLeftovers removes leftover temp files for a reader, so that they do
// not wait for the next write to go: only when there are some (a reader
// creates no lock file otherwise) and no writer holds the lock (a writer's
// temp file is its work in progress, and it sweeps itself). A sweep that
// cannot take the lock, on a read-only folder say, leaves them.
func (f *File) sweepLeftovers() {
	if len(f.leftovers()) == 0 {
		return
	}
	real := f.real()
	fl := atomicfile.LockFile(real)
	defer fl.Close()
	if ok, err := fl.TryLock(); err != nil || !ok {
		return
	}
	defer fl.Unlock()
	atomicfile.MatchOwner(real+".lock", real) // as Lock: root's read may have made it
	f.removeLeftovers()
}

// Update changes the vault under an exclusive lock: it loads the current
// contents, calls fn to change the map and, if fn returns nil, replaces the
// whole vault atomically. On any error the old vault is left untouched. The
// lock is a file beside the vault (path + ".lock"), so concurrent Updates,
// also from several processes, never lose a change.
func (f *File) Update(fn func(secrets map[string]Secret) error) error {
	if f.key == nil {
		return fmt.Errorf("%s: %w", f.path, ErrNoKey)
	}
	dir := filepath.Dir(f.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("%s: cannot create vault folder: %w", f.path, err)
	}
	if err := f.danglingLink(); err != nil {
		return err
	}
	unlock, err := f.lock()
	if err != nil {
		return err
	}
	defer unlock()
	f.removeLeftovers()

	secrets, err := f.load()
	if err != nil {
		return err
	}
	if err := fn(secrets); err != nil {
		return err
	}
	plain, err := encode(secrets)
	if err != nil {
		return fmt.Errorf("%s: %w", f.path, err)
	}
	defer clear(plain)
	sealed, err := f.encrypt(plain)
	if err != nil {
		return err
	}
	if len(sealed) > maxVaultSize {
		// Load would refuse it, and so every command after, rm included.
		return fmt.Errorf("%s: the vault would grow past %d MiB, more than till reads; nothing was written (remove secrets that are no longer used)", f.path, maxVaultSize>>20)
	}
	return f.replace(sealed)
}

func (f *File) lock() (unlock func(), err error) {
	unlock, err = atomicfile.Lock(f.real(), lockTimeout)
	if errors.Is(err, ErrLocked) {
		return nil, fmt.Errorf("%s: %w", f.path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: cannot lock vault: %w", f.path, err)
	}
	return unlock, nil
}

func (f *File) encrypt(plain []byte) ([]byte, error) {
	recipient, err := f.key.recipient()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, recipient)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot encrypt vault: %w", f.path, err)
	}
	if _, err := w.Write(plain); err != nil {
		return nil, fmt.Errorf("%s: cannot encrypt vault: %w", f.path, err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("%s: cannot encrypt vault: %w", f.path, err)
	}
	if err := aw.Close(); err != nil {
		return nil, fmt.Errorf("%s: cannot encrypt vault: %w", f.path, err)
	}
	return buf.Bytes(), nil
}

// real returns the path of the vault file itself: a vault reached through
// a symbolic link (kept on a volume, say) is written, locked and swept
// where it lives, and the link stays a link.
func (f *File) real() string {
	if target, err := filepath.EvalSymlinks(f.path); err == nil {
		return target
	}
	return f.path
}

// danglingLink refuses a vault path that is a symbolic link to nothing:
// replace would put the new vault in the link's place, not where it
// points (a volume), and creating the file it names would let whoever
// planted the link choose where till writes.
func (f *File) danglingLink() error {
	target, err := os.Readlink(f.path)
	if err != nil {
		return nil // not a link
	}
	if _, err := os.Stat(f.path); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return fmt.Errorf("%s: a symbolic link to %s, which does not exist; not replacing the link with a new vault: remove the link, or point vault.path where the vault is to be", f.path, target)
}

// replace writes data to a temporary file in the vault's folder (mode 0600),
// syncs it, renames it over the vault and syncs the folder, so that after a
// crash the vault is either the old or the new one, never a mix.
func (f *File) replace(data []byte) (err error) {
	real := f.real()
	dir, base := filepath.Split(real)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*") // mode 0600
	if err != nil {
		return fmt.Errorf("%s: cannot write vault: %w", f.path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("%s: cannot write vault: %w", f.path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("%s: cannot write vault: %w", f.path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s: cannot write vault: %w", f.path, err)
	}
	// Root rotating a vault that another user owns (the uid a container's
	// till runs as) keeps it theirs: a vault only root could read would
	// stop that till's reloads and rotations.
	atomicfile.MatchOwner(tmp.Name(), real)
	if err := beforeRename(tmp.Name()); err != nil {
		return fmt.Errorf("%s: cannot write vault: %w", f.path, err)
	}
	if err := os.Rename(tmp.Name(), real); err != nil {
		return fmt.Errorf("%s: cannot replace vault: %w", f.path, err)
	}
	atomicfile.SyncDir(dir)
	return nil
}

// Set stores s. Replacing an existing secret is a rotation: Created is kept
// from the old secret and Updated is s.Updated (time.Now() if zero).
// Expires is taken from s.
func (f *File) Set(s Secret) error {
	if err := ValidName(s.Name); err != nil {
		return err
	}
	if s.Updated.IsZero() {
		s.Updated = time.Now().Round(0)
	}
	return f.Update(func(secrets map[string]Secret) error {
		if old, ok := secrets[s.Name]; ok {
			s.Created = old.Created
		} else if s.Created.IsZero() {
			s.Created = s.Updated
		}
		secrets[s.Name] = s
		return nil
	})
}

// Remove deletes the secret name; it wraps ErrNotFound when there is none.
func (f *File) Remove(name string) error {
	return f.Update(func(secrets map[string]Secret) error {
		if _, ok := secrets[name]; !ok {
			return fmt.Errorf("secret %q %w", name, ErrNotFound)
		}
		delete(secrets, name)
		return nil
	})
}
