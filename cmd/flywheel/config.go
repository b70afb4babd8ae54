package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/ingest"
	"github.com/flywheel-dev/flywheel/kafka"
	"github.com/flywheel-dev/flywheel/retrain"
)

// Config is the whole configuration file (flywheel.example.yaml documents
// every field). Every field can be overridden by an environment variable
// named after its path: FLYWHEEL_HTTP_ADDR, FLYWHEEL_KAFKA_BROKERS (comma
// separated), FLYWHEEL_MODELS_HOMEPAGE_RETRAIN_SCHEDULE, ...
type Config struct {
	HTTP struct {
		Addr              string        `yaml:"addr"`
		ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
		ReadTimeout       time.Duration `yaml:"read_timeout"`
		WriteTimeout      time.Duration `yaml:"write_timeout"`
		IdleTimeout       time.Duration `yaml:"idle_timeout"`
		MaxHeaderBytes    int           `yaml:"max_header_bytes"`
	} `yaml:"http"`
	Kafka      kafka.Config      `yaml:"kafka"`
	ClickHouse clickhouse.Config `yaml:"clickhouse"`
	Auth       struct {
		AppKeys   []apiKey `yaml:"app_keys"`
		AdminKeys []apiKey `yaml:"admin_keys"`
	} `yaml:"auth"`
	Limits flywheel.Limits `yaml:"limits"`
	Serve  struct {
		PollInterval    time.Duration `yaml:"poll_interval"`
		ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
		SpoolDir        string        `yaml:"spool_dir"`
		SpoolMaxBytes   int64         `yaml:"spool_max_bytes"`
		GuardInterval   time.Duration `yaml:"guard_interval"`
	} `yaml:"serve"`
	Deploy struct {
		CheckInterval time.Duration `yaml:"check_interval"`
	} `yaml:"deploy"`
	Ingest ingest.Config `yaml:"ingest"`
	Log    struct {
		Level string `yaml:"level"`
	} `yaml:"log"`
	Models map[string]flywheel.ModelConfig `yaml:"models"`

	// kafkaDefaulted is set when neither the file nor the environment named
	// brokers: `flywheel dev` then starts its embedded broker.
	kafkaDefaulted bool
}

var defaultBrokers = []string{"127.0.0.1:9092"}

func defaultConfig() Config {
	var c Config
	c.HTTP.Addr = "127.0.0.1:8080"
	c.ClickHouse.DSN = "clickhouse://127.0.0.1:9000/flywheel"
	c.Log.Level = "info"
	c.Deploy.CheckInterval = 15 * time.Second
	c.Limits.RatePerKey, c.Limits.Burst = flywheel.DefaultRatePerKey, flywheel.DefaultBurst
	return c
}

// defaultModels is used when the file configures none, as when trying
// Flywheel out (the README's tour): one ranker named homepage that crosses
// user and item features, with a reward window of 2 s rather than the
// default 10 min, so that what `flywheel sim` just played can be trained on
// at once. A real model is configured, with the window its users need.
func defaultModels() map[string]flywheel.ModelConfig {
	return map[string]flywheel.ModelConfig{"homepage": {Kind: flywheel.KindRanker, Interactions: [][]string{{"user", "item"}},
		Reward: flywheel.RewardConfig{Window: 2 * time.Second}}}
}

// loadConfig reads path (if not empty), applies FLYWHEEL_* overrides from
// getenv, fills defaults and validates. Errors name the field.
func loadConfig(path string, getenv func(string) string) (*Config, error) {
	c := defaultConfig()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) { // an empty file is fine
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if len(c.Models) == 0 {
		c.Models = defaultModels()
	}
	if err := applyEnv(reflect.ValueOf(&c).Elem(), "FLYWHEEL", getenv); err != nil {
		return nil, err
	}
	if c.Deploy.CheckInterval <= 0 {
		return nil, errors.New("deploy.check_interval must be positive")
	}
	if _, err := c.logLevel(); err != nil {
		return nil, err
	}
	if n := c.Serve.SpoolMaxBytes; n < 0 || n > 0 && n < 16<<20 {
		return nil, fmt.Errorf("serve.spool_max_bytes is %d: it must be at least 16 MiB (%d), room for many decisions of up to 1 MB each (0: the default, 1 GiB)", n, 16<<20)
	}
	if len(c.Kafka.Brokers) == 0 {
		c.Kafka.Brokers = append([]string(nil), defaultBrokers...)
		c.kafkaDefaulted = true
	}
	if c.Ingest.Group == "" {
		// Under the topic prefix, as the topics are: installations that
		// share a cluster under different prefixes share no group.
		c.Ingest.Group = c.Kafka.TopicPrefix + "flywheel-ingest"
	}
	for name, mc := range c.Models {
		mc = mc.WithDefaults()
		if err := flywheel.ValidateName("models."+name, name); err != nil {
			return nil, err
		}
		if err := mc.Validate("models." + name); err != nil {
			return nil, err
		}
		if err := retrain.ParseSchedule("models."+name+".retrain.schedule", mc.Retrain.Schedule); err != nil {
			return nil, err
		}
		c.Models[name] = mc
	}
	return &c, nil
}

// applyEnv overrides fields of v from environment variables named
// prefix_FIELD (yaml names, upper case, joined by _). Map entries that exist
// are walked too (FLYWHEEL_MODELS_HOMEPAGE_...).
func applyEnv(v reflect.Value, prefix string, getenv func(string) string) error {
	switch v.Kind() {
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			if err := applyEnv(v.Field(i), prefix+"_"+strings.ToUpper(tag), getenv); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
		for _, k := range keys {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(v.MapIndex(k))
			if err := applyEnv(e, prefix+"_"+strings.ToUpper(strings.ReplaceAll(k.String(), "-", "_")), getenv); err != nil {
				return err
			}
			v.SetMapIndex(k, e)
		}
		return nil
	}
	s := getenv(prefix)
	if s == "" {
		return nil
	}
	if err := setFromString(v, s); err != nil {
		// The value is not shown: it may be a key.
		return fmt.Errorf("%s is not a valid %s (its value is not shown)", prefix, kindOf(v))
	}
	return nil
}

func setFromString(v reflect.Value, s string) error {
	if v.Type() == reflect.TypeOf(time.Duration(0)) {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		v.SetInt(n)
	case reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return err
		}
		v.SetFloat(f)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		v.SetBool(b)
	default:
		// anything else (lists, nested lists) is given as YAML
		p := reflect.New(v.Type())
		if err := yaml.Unmarshal([]byte(yamlList(v, s)), p.Interface()); err != nil {
			return err
		}
		v.Set(p.Elem())
	}
	return nil
}

// yamlList lets a []string be given as a plain comma-separated list.
func yamlList(v reflect.Value, s string) string {
	if v.Kind() == reflect.Slice && (v.Type().Elem().Kind() == reflect.String || v.Type().Elem() == reflect.TypeOf(apiKey{})) && !strings.HasPrefix(strings.TrimSpace(s), "[") {
		parts := strings.Split(s, ",")
		for i := range parts {
			parts[i] = strconv.Quote(strings.TrimSpace(parts[i]))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	return s
}
