package object

import (
	"bytes"
	"errors"
	"testing"

	"filippo.io/age"
)

func newKey(t *testing.T) *age.X25519Identity {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestEncryptedRoundTrip(t *testing.T) {
	key := newKey(t)
	data := walLike(1<<20, 5)
	for _, c := range allCodecs {
		var buf bytes.Buffer
		sum, err := Encode(&buf, bytes.NewReader(data), Options{Codec: c, Recipients: []age.Recipient{key.Recipient()}})
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(buf.Bytes(), data[1000:1064]) {
			t.Fatalf("%s: plaintext visible in the encrypted frame", c)
		}
		var out bytes.Buffer
		got, err := DecodeWith(&out, bytes.NewReader(buf.Bytes()), []age.Identity{key})
		if err != nil || got != sum || !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("%s: encrypted round trip: %v", c, err)
		}
	}
}

func TestEncryptedKeyErrors(t *testing.T) {
	key, other := newKey(t), newKey(t)
	var buf bytes.Buffer
	Encode(&buf, bytes.NewReader(walLike(100000, 6)), Options{Codec: Zstd, Recipients: []age.Recipient{key.Recipient()}})
	for name, ids := range map[string][]age.Identity{"no key": nil, "wrong key": {other}} {
		var out bytes.Buffer
		_, err := DecodeWith(&out, bytes.NewReader(buf.Bytes()), ids)
		if !errors.Is(err, ErrKey) || errors.Is(err, ErrCorrupt) || out.Len() != 0 {
			t.Errorf("%s: got %v with %d bytes out, want ErrKey before any output", name, err, out.Len())
		}
	}
	// Rotation: objects written to the old key stay readable with a key file holding both.
	if _, err := DecodeWith(&bytes.Buffer{}, bytes.NewReader(buf.Bytes()), []age.Identity{other, key}); err != nil {
		t.Errorf("old and new keys: %v", err)
	}
}

func TestEncryptedTamperDetected(t *testing.T) {
	key := newKey(t)
	var buf bytes.Buffer
	Encode(&buf, bytes.NewReader(walLike(3000, 7)), Options{Codec: Zstd, Recipients: []age.Recipient{key.Recipient()}})
	frame := buf.Bytes()
	ids := []age.Identity{key}
	for i := range frame {
		bad := bytes.Clone(frame)
		bad[i] ^= 0x04
		if _, err := DecodeWith(&bytes.Buffer{}, bytes.NewReader(bad), ids); !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrKey) {
			t.Fatalf("flip at %d of %d: got %v, want a refusal", i, len(frame), err)
		}
	}
	for n := 0; n < len(frame); n++ {
		if _, err := DecodeWith(&bytes.Buffer{}, bytes.NewReader(frame[:n]), ids); err == nil {
			t.Fatalf("truncated to %d: accepted", n)
		}
	}
}
