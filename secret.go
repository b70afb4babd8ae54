package flywheel

import (
	"encoding/json"
	"fmt"
	"log/slog"
)

// Secret is a string that does not print, such as a password: fmt, slog,
// JSON and YAML show Redacted (or nothing, when it is empty) in its place.
// The Kafka and ClickHouse passwords are Secrets.
type Secret string

// Redacted is what a Secret that is not empty shows.
const Redacted = "[redacted]"

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return Redacted
}

// GoString is what %#v shows.
func (s Secret) GoString() string { return fmt.Sprintf("flywheel.Secret(%q)", s.String()) }

// LogValue is what slog shows.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON encodes the secret as Redacted.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalYAML encodes the secret as Redacted.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }
