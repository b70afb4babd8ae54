package main

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/flywheel-dev/flywheel/serve"
)

// apiKey is one entry of auth.app_keys or auth.admin_keys: a plain string
// (the key), "label:key", or {label: ops, key: ...}. The label is what the
// deployment history records as the actor of what the key did.
type apiKey serve.Key

// UnmarshalYAML reads any of the three forms. Its errors never show a key.
func (k *apiKey) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*k = apiKey(serve.ParseKey(n.Value))
		return nil
	case yaml.MappingNode:
		var m struct {
			Label string `yaml:"label"`
			Key   string `yaml:"key"`
		}
		if err := n.Decode(&m); err != nil {
			return fmt.Errorf("line %d: a key is a string, \"label:key\" or {label: ..., key: ...}", n.Line)
		}
		*k = apiKey{Label: m.Label, Secret: m.Key}
		return nil
	}
	return fmt.Errorf("line %d: a key is a string, \"label:key\" or {label: ..., key: ...}", n.Line)
}

func serveKeys(ks []apiKey) []serve.Key {
	out := make([]serve.Key, len(ks))
	for i, k := range ks {
		out[i] = serve.Key(k)
	}
	return out
}

// logLevel returns log.level, or an error naming the field.
func (c *Config) logLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.Log.Level)); err != nil {
		return 0, errors.New("log.level must be debug, info, warn or error")
	}
	return l, nil
}

// kindOf names what an environment variable for v must hold.
func kindOf(v reflect.Value) string {
	if v.Type() == reflect.TypeOf(time.Duration(0)) {
		return "duration (like 30s or 5m)"
	}
	switch v.Kind() {
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "integer"
	case reflect.Float64:
		return "number"
	case reflect.Bool:
		return "bool (true or false)"
	case reflect.Slice:
		return "list (comma separated, or YAML)"
	}
	return "value"
}

// check validates everything cmd will use before it does anything: no
// command migrates, creates a topic or registers a version and then
// refuses its configuration.
func (e *env) check(cmd string) error {
	switch cmd {
	case "dev", "serve", "ingest", "retrain", "eval", "migrate", "models", "import":
	default:
		return nil
	}
	if _, err := e.cfg.ClickHouse.Options(); err != nil {
		return err
	}
	if cmd != "dev" || e.kafkaGiven { // dev without brokers starts its own
		if err := e.cfg.Kafka.Validate(); err != nil {
			return err
		}
	}
	switch cmd {
	case "serve":
		return e.serveConfig(false).Validate()
	case "dev":
		return e.serveConfig(true).Validate()
	}
	return nil
}

// open reports whether no API key is configured.
func (e *env) open() bool { return len(e.cfg.Auth.AppKeys) == 0 && len(e.cfg.Auth.AdminKeys) == 0 }
