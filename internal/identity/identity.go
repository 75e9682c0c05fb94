// Package identity hashes what must not change between a checkpoint and
// its resumption (a model's manifest, a training configuration, …), so a
// resumed run can tell that it is the run its checkpoint came from.
package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/migu-ml/migu/internal/badinput"
)

// Of is the hex SHA-256 of the JSON encodings of parts, each followed by a
// zero byte; a part that does not encode is bad input.
func Of(parts ...any) (string, error) {
	h := sha256.New()
	for _, p := range parts {
		raw, err := json.Marshal(p)
		if err != nil {
			return "", badinput.Errorf("identity: %v", err)
		}
		h.Write(raw)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
