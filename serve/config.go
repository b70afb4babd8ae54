package serve

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/flywheel-dev/flywheel"
)

// Key is an API key. Label names who holds it in the deployment history
// (the actor of a promotion, "api:ops"); without one the actor is the key's
// place in the configuration ("api:admin_keys[0]"). No part of Secret is
// ever logged or recorded.
type Key struct {
	Label  string
	Secret string
}

// HTTPConfig bounds what one connection may take of the server. Zero
// fields take their defaults.
type HTTPConfig struct {
	// ReadHeaderTimeout bounds reading a request's headers; default 5s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included, so a
	// client trickling its body cannot hold the server; default 15s.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from the end of its headers to the end
	// of its answer; default 30s (POST /v1/models/{name}/retrain, which
	// trains while the client waits, is not bound).
	WriteTimeout time.Duration
	// IdleTimeout bounds how long a kept-alive connection waits for its
	// next request; default 120s.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers; default 64 KiB.
	MaxHeaderBytes int
}

func (h HTTPConfig) withDefaults() HTTPConfig {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&h.ReadHeaderTimeout, 5*time.Second)
	def(&h.ReadTimeout, 15*time.Second)
	def(&h.WriteTimeout, 30*time.Second)
	def(&h.IdleTimeout, 120*time.Second)
	if h.MaxHeaderBytes <= 0 {
		h.MaxHeaderBytes = 64 << 10
	}
	return h
}

// Validate reports the first bad field of c, named by its configuration
// path, before anything is built: a process checks its whole configuration
// before its first side effect. It never shows a key.
func (c Config) Validate() error {
	if len(c.Models) == 0 {
		return errors.New("serve: no models configured")
	}
	for name, mc := range c.Models {
		if err := flywheel.ValidateName("models."+name, name); err != nil {
			return err
		}
		if err := mc.Validate("models." + name); err != nil {
			return err
		}
	}
	if len(c.AppKeys) == 0 && len(c.AdminKeys) == 0 && !c.Open {
		return errors.New("auth.app_keys and auth.admin_keys are both empty: only `flywheel dev` may run without keys")
	}
	for _, ks := range []struct {
		field string
		keys  []Key
	}{{"auth.app_keys", c.AppKeys}, {"auth.admin_keys", c.AdminKeys}} {
		for i, k := range ks.keys {
			if len(k.Secret) < 16 {
				return fmt.Errorf("%s[%d] is shorter than 16 characters", ks.field, i)
			}
			if k.Label != "" && !validLabel(k.Label) {
				return fmt.Errorf("%s[%d].label must be 1 to 64 characters of letters, digits, '.', '_', '-' and '@'", ks.field, i)
			}
		}
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("http.addr %q: %w", c.Addr, err)
	}
	if err := c.Limits.Validate("limits"); err != nil {
		return err
	}
	h := c.HTTP
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"read_header_timeout", h.ReadHeaderTimeout}, {"read_timeout", h.ReadTimeout}, {"write_timeout", h.WriteTimeout}, {"idle_timeout", h.IdleTimeout}} {
		if d.v < 0 {
			return fmt.Errorf("http.%s must not be negative (0 is the default)", d.name)
		}
	}
	if h.MaxHeaderBytes < 0 {
		return errors.New("http.max_header_bytes must not be negative (0 is the default)")
	}
	if c.PollInterval < 0 || c.ShutdownTimeout < 0 || c.GuardInterval < 0 {
		return errors.New("serve: poll_interval, shutdown_timeout and guard_interval must not be negative (0 is the default)")
	}
	return nil
}

func (c Config) withDefaults() Config {
	c.Limits = c.Limits.WithDefaults()
	c.HTTP = c.HTTP.withDefaults()
	if c.PollInterval <= 0 {
		c.PollInterval = 30 * time.Second
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.GuardInterval <= 0 {
		c.GuardInterval = 10 * time.Second
	}
	return c
}

// validLabel reports whether l may label a key: 1 to 64 of [A-Za-z0-9._@-].
func validLabel(l string) bool {
	return l != "" && len(l) <= 64 && strings.IndexFunc(l, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' || r == '@')
	}) < 0
}

// ParseKey reads a key as configured: "label:secret" when the part before
// the first ':' is a label (validLabel) and the rest is a key, else the
// whole string as a key with no label. A key that itself holds ':' after
// such a prefix must be configured with its label apart.
func ParseKey(s string) Key {
	if label, secret, ok := strings.Cut(s, ":"); ok && validLabel(label) && len(secret) >= 16 {
		return Key{Label: label, Secret: secret}
	}
	return Key{Secret: s}
}
