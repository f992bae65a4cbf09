package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"filippo.io/age"
)

const (
	envAgeRecipients = "WALSHIP_AGE_RECIPIENTS"
	envAgeKeyFile    = "WALSHIP_AGE_KEY_FILE"
)

// cryptoFlags adds the client-side encryption options to a command.
func (e *env) cryptoFlags(fs *flag.FlagSet, c *common) {
	fs.StringVar(&c.ageRecipients, "age-recipients", e.getenv(envAgeRecipients),
		"encrypt new objects to these age public keys, comma-separated ($"+envAgeRecipients+")")
	fs.StringVar(&c.ageKeyFile, "age-key-file", e.getenv(envAgeKeyFile),
		"age identity file for reading encrypted objects; may hold old and new keys ($"+envAgeKeyFile+")")
}

// recipients are the keys new objects are encrypted to: the listed public keys, else those of
// the identities in the key file, else none (no encryption). wal-push needs no secret key.
func (c *common) recipients() ([]age.Recipient, error) {
	var out []age.Recipient
	for _, s := range strings.FieldsFunc(c.ageRecipients, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
		r, err := age.ParseX25519Recipient(s)
		if err != nil {
			return nil, fmt.Errorf("--age-recipients: %q is not an age public key (age1...): %w", s, err)
		}
		out = append(out, r)
	}
	if len(out) > 0 || c.ageKeyFile == "" {
		return out, nil
	}
	ids, err := c.identities()
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if x, ok := id.(*age.X25519Identity); ok {
			out = append(out, x.Recipient())
		}
	}
	return out, nil
}

// identities reads the key file; none when no file is configured.
func (c *common) identities() ([]age.Identity, error) {
	if c.ageKeyFile == "" {
		return nil, nil
	}
	f, err := os.Open(c.ageKeyFile)
	if err != nil {
		return nil, fmt.Errorf("--age-key-file: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return nil, fmt.Errorf("--age-key-file %s: %w", c.ageKeyFile, err)
	}
	return ids, nil
}
