package reload

import (
	"os"
	"slices"
	"time"

	"github.com/tillgw/till/config"
)

// pollInterval is how often Watch checks the files it watches.
const pollInterval = 250 * time.Millisecond

// Watch reloads when a file a reload reads changes (watchedFiles), until
// stop is called. Every pollInterval it compares each file's identity,
// size, mode and modification time, and reloads once a change has held
// still for one interval (a save can be several writes). A change of owner counts too:
// a chown is how a vault that the running till cannot read is mended.
// Polling a few files costs nothing per request, where a watch on their
// folders would wake till at each write of an audit log kept there.
func (r *Reloader) Watch() (stop func()) {
	return r.watch(pollInterval)
}

func (r *Reloader) watch(interval time.Duration) (stop func()) {
	r.mu.Lock()
	p := r.poll
	r.mu.Unlock()
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				if p.settled() {
					_ = r.Reload()
				}
				// A reload may name another vault file: it is the one
				// watched from then on.
				r.mu.Lock()
				files := watchedFiles(r.cfg)
				r.mu.Unlock()
				if !slices.Equal(files, p.files) {
					p = p.follow(files)
				}
			case <-done:
				return
			}
		}
	}()
	return func() { close(done) }
}

// watchedFiles are the files of cfg whose change reloads it, those that
// are set: the config, the vault and its key, the price table and the
// interception CA certificate, each of which a reload reads again. One
// that is missing is watched for its coming.
func watchedFiles(cfg *config.Config) []string {
	var files []string
	for _, f := range []string{cfg.File, cfg.Vault.Path, cfg.Vault.KeyFile, cfg.Prices.File, cfg.Forward.CACert} {
		if f != "" && !slices.Contains(files, f) {
			files = append(files, f)
		}
	}
	return files
}

// Seen holds the state of the files a reload reads, taken before till
// first reads them at start (Options.Seen): an edit that lands while till
// starts (a passphrase vault takes a second to decrypt) is a change Watch
// sees, not the state it starts from. A nil Seen records nothing.
type Seen struct {
	files  []string
	states []os.FileInfo
}

// See records the state of each file not seen yet ("" is none).
func (s *Seen) See(files ...string) {
	if s == nil {
		return
	}
	for _, f := range files {
		if f != "" && !slices.Contains(s.files, f) {
			s.files = append(s.files, f)
			s.states = append(s.states, statAll([]string{f})...)
		}
	}
}

// SeeFilesOf records the state of the files of cfg that a reload reads,
// those not seen yet: call it once cfg is read, before the files it
// names are.
func (s *Seen) SeeFilesOf(cfg *config.Config) { s.See(watchedFiles(cfg)...) }

// poller tracks the state of a set of files between checks.
type poller struct {
	files   []string
	last    []os.FileInfo
	changed bool // a change was seen and has not yet held still
}

// newPoller records the current state of files.
func newPoller(files ...string) *poller {
	p := &poller{files: files}
	p.last = statAll(p.files)
	return p
}

// follow returns a poller of files that keeps p's state of those p
// watched too: the config edited while the reload that named another
// vault ran is a change still to see, not the new poller's starting
// state. The others (the new vault) start unknown, as missing: that
// reload read one at some point, and an edit since (a secret rotated)
// may be in its state now, so a new vault that exists is reloaded once
// more.
func (p *poller) follow(files []string) *poller {
	n := &poller{files: files, last: make([]os.FileInfo, len(files)), changed: p.changed}
	for i, f := range files {
		if j := slices.Index(p.files, f); j >= 0 {
			n.last[i] = p.last[j]
		}
	}
	return n
}

// settled checks the files once and reports whether a change seen at an
// earlier check has since held still: true once per burst of writes, at
// the first check that finds nothing new.
func (p *poller) settled() bool {
	now := statAll(p.files)
	if !slices.EqualFunc(now, p.last, sameState) {
		p.last, p.changed = now, true
		return false
	}
	if p.changed {
		p.changed = false
		return true
	}
	return false
}

// statAll returns the state of each file; nil for one that is missing.
func statAll(files []string) []os.FileInfo {
	states := make([]os.FileInfo, len(files))
	for i, f := range files {
		states[i], _ = os.Stat(f)
	}
	return states
}

// sameState reports whether a file is unchanged between two checks.
func sameState(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime()) && a.Mode() == b.Mode() && sameOwner(a, b)
}
