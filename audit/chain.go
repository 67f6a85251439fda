package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"

	"github.com/tillgw/till/internal/termtext"
)

// Chain field names: part of the audit record contract.
const (
	fieldSeq      = "seq"
	fieldPrev     = "prev"
	fieldPrevFile = "prev_file"
)

// chain is where the hash chain stands: the records of a file are numbered
// from 1 (seq), and each names the SHA-256 of the line before it (prev),
// across files too; the first record of a file that follows another names
// that file (prev_file).
type chain struct {
	seq      uint64 // of the last record in the current file
	prev     [2 * sha256.Size]byte
	hasPrev  bool   // false only before the first record of the first file
	prevFile []byte // JSON string, for the next record; nil when none
}

// stamp appends to dst the record raw (one JSON object and a newline, as
// zerolog writes it) with the chain's fields added as its last ones, and
// with no rune a terminal would act on (see termtext.JSON).
func (c *chain) stamp(dst, raw []byte) []byte {
	raw = bytes.TrimRight(raw, "\n")
	dst = append(dst, termtext.JSON(raw[:len(raw)-1])...) // without its closing brace
	if len(raw) > 2 {
		dst = append(dst, ',')
	}
	dst = append(dst, `"`+fieldSeq+`":`...)
	dst = strconv.AppendUint(dst, c.seq+1, 10)
	dst = append(dst, `,"`+fieldPrev+`":"`...)
	if c.hasPrev {
		dst = append(dst, c.prev[:]...)
	}
	dst = append(dst, '"')
	if c.prevFile != nil {
		dst = append(dst, `,"`+fieldPrevFile+`":`...)
		dst = append(dst, c.prevFile...)
	}
	return append(dst, "}\n"...)
}

// commit moves the chain past line, a stamped record that was written.
func (c *chain) commit(line []byte) {
	c.seq++
	c.link(line)
	c.prevFile = nil
}

// link makes line, the last record of a file, the one the next record
// chains to.
func (c *chain) link(line []byte) {
	c.prev = hashOf(line)
	c.hasPrev = true
}

// hashOf is the hex SHA-256 of line without its newline: what the
// record after it holds as prev.
func hashOf(line []byte) (h [2 * sha256.Size]byte) {
	sum := sha256.Sum256(bytes.TrimRight(line, "\n"))
	hex.Encode(h[:], sum[:])
	return h
}

// restart starts a new file, after the one named prevFile (a base name;
// "" when unknown).
func (c *chain) restart(prevFile string) {
	c.seq = 0
	c.prevFile = nil
	if prevFile != "" && c.hasPrev {
		c.prevFile, _ = json.Marshal(prevFile)
	}
}

// resume continues a file whose last line is last: its records go on
// from the seq it holds.
func (c *chain) resume(last []byte) {
	c.renumber(last)
	c.link(last)
}

// renumber continues a file whose last line is last, from the seq it
// holds, but chains the next record to the one the chain was at.
func (c *chain) renumber(last []byte) {
	var r struct {
		Seq uint64 `json:"seq"`
	}
	_ = json.Unmarshal(last, &r) // a line from before the chain has none
	c.seq = r.Seq
	c.prevFile = nil
}

// follows reports whether line is the record the chain is at.
func (c *chain) follows(line []byte) bool { return c.hasPrev && hashOf(line) == c.prev }

// head is the hex SHA-256 of the last record written ("" before any).
func (c *chain) head() string {
	if !c.hasPrev {
		return ""
	}
	return string(c.prev[:])
}
