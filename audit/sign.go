package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"
)

// fieldSig holds a checkpoint's signature.
const fieldSig = "sig"

// checkpoint builds a checkpoint record for the chain's next position: a
// signature over the chain head (prev), with its own seq and time.
func (s *Sink) checkpoint() []byte {
	var tb [40]byte
	now := time.Now().UTC().AppendFormat(tb[:0], time.RFC3339Nano)
	sig := ed25519.Sign(s.opts.Signer, signedText(string(now), s.chain.seq+1, s.chain.head()))
	rec := make([]byte, 0, 200)
	rec = append(rec, `{"level":"info","time":"`...)
	rec = append(rec, now...)
	rec = append(rec, `","event":"checkpoint","`+fieldSig+`":"`...)
	rec = base64.StdEncoding.AppendEncode(rec, sig)
	return append(rec, "\"}\n"...)
}

// signNow writes a checkpoint. One that cannot be written is tried again
// after the next record.
func (s *Sink) signNow() {
	if err := s.put(nil); err != nil {
		if s.opts.OnError != nil {
			s.opts.OnError(fmt.Errorf("write an audit checkpoint: %w", err), nil)
		}
		return
	}
	s.unsigned = 0
	s.lastSign = time.Now()
}

// signedText is what a checkpoint's signature covers: its time, its seq
// and the chain head it follows, the hash that names every record before
// it.
func signedText(time string, seq uint64, prev string) []byte {
	return []byte("till audit checkpoint\n" + time + "\n" + strconv.FormatUint(seq, 10) + "\n" + prev)
}

// NewKey returns a new signing key, encoded for the vault: base64 of its
// PKCS #8 form, as till keeps its CA key.
func NewKey() (string, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(der), nil
}

// ParseKey reads a signing key written by NewKey.
func ParseKey(stored string) (ed25519.PrivateKey, error) {
	der, err := base64.StdEncoding.DecodeString(stored)
	if err != nil {
		return nil, errors.New("the audit signing key is not base64")
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, errors.New("the audit signing key cannot be parsed")
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, errors.New("the audit signing key is not an Ed25519 key")
	}
	return priv, nil
}

// AuthorizedKey is the public half of key in the OpenSSH format
// ("ssh-ed25519 AAAA…"), with a newline.
func AuthorizedKey(key ed25519.PrivateKey) string {
	pub, err := ssh.NewPublicKey(key.Public())
	if err != nil {
		panic(err) // an Ed25519 public key always converts
	}
	return string(ssh.MarshalAuthorizedKey(pub))
}

// ParseAuthorizedKey reads an Ed25519 public key in the OpenSSH format.
// A security key's (sk-ssh-ed25519@openssh.com) or a certificate holds
// an Ed25519 key too, but none that till signs with: it is refused by
// its type, as any other.
func ParseAuthorizedKey(text []byte) (ed25519.PublicKey, error) {
	pub, _, _, _, err := ssh.ParseAuthorizedKey(text)
	if err != nil {
		return nil, errors.New("not an OpenSSH public key (want a line like: ssh-ed25519 AAAA…)")
	}
	notEd25519 := errors.New("not an Ed25519 public key (want ssh-ed25519, as till audit pubkey prints)")
	ck, ok := pub.(ssh.CryptoPublicKey)
	if !ok || pub.Type() != ssh.KeyAlgoED25519 {
		return nil, notEd25519
	}
	k, ok := ck.CryptoPublicKey().(ed25519.PublicKey)
	if !ok {
		return nil, notEd25519
	}
	return k, nil
}
