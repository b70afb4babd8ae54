package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"FLYWHEEL_HTTP_ADDR":                          "127.0.0.1:7777",
		"FLYWHEEL_KAFKA_BROKERS":                      "a:1, b:2",
		"FLYWHEEL_MODELS_HOMEPAGE_RETRAIN_SCHEDULE":   "@every 30s",
		"FLYWHEEL_MODELS_HOMEPAGE_EXPLORATION_LAMBDA": "2.5",
		"FLYWHEEL_MODELS_HOMEPAGE_REWARD_WINDOW":      "90s",
	}
	c, err := loadConfig(filepath.Join("testdata", "good.yml"), func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	hp := c.Models["homepage"]
	switch {
	case c.HTTP.Addr != "127.0.0.1:7777":
		t.Errorf("http.addr = %q", c.HTTP.Addr)
	case strings.Join(c.Kafka.Brokers, "|") != "a:1|b:2":
		t.Errorf("kafka.brokers = %q", c.Kafka.Brokers)
	case hp.Retrain.Schedule != "@every 30s" || hp.Exploration.Lambda != 2.5 || hp.Reward.Window != 90*time.Second:
		t.Errorf("env overrides not applied: %+v", hp)
	case hp.Reward.Aggregate != "max" || hp.Retrain.Holdout != 0.2:
		t.Errorf("file values lost: %+v", hp)
	case c.Models["ctr"].Kind != "classifier" || c.Models["ctr"].Bits != 18:
		t.Errorf("defaults not filled for ctr: %+v", c.Models["ctr"])
	}
}

func TestLoadConfigBad(t *testing.T) {
	t.Parallel()
	for file, want := range map[string]string{
		"kind.bad.yml":         "models.homepage.kind",
		"epsilon.bad.yml":      "models.homepage.exploration.epsilon",
		"schedule.bad.yml":     "models.homepage.retrain.schedule",
		"aggregate.bad.yml":    "models.homepage.reward.aggregate",
		"unknown.bad.yml":      "htp",
		"name.bad.yml":         "models.Home Page",
		"spool.bad.yml":        "serve.spool_max_bytes",
		"rule.bad.yml":         "models.homepage.promote.rule",
		"margin.bad.yml":       "models.homepage.promote.margin",
		"reward_range.bad.yml": "models.homepage.reward.min (1) is above models.homepage.reward.max (0)",
	} {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			_, err := loadConfig(filepath.Join("testdata", file), func(string) string { return "" })
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error %v does not name %q", err, want)
			}
		})
	}
}

func TestDefaultConfigWithoutFile(t *testing.T) {
	t.Parallel()
	c, err := loadConfig("", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Models["homepage"]; !ok || c.ClickHouse.DSN == "" {
		t.Fatalf("default config: %+v", c)
	}
	if !c.kafkaDefaulted || len(c.Kafka.Brokers) != 1 {
		t.Fatalf("no brokers named: kafkaDefaulted %v, brokers %v; dev would not start its embedded broker", c.kafkaDefaulted, c.Kafka.Brokers)
	}
	named, err := loadConfig(filepath.Join("testdata", "good.yml"), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if named.kafkaDefaulted {
		t.Fatalf("brokers %v named in the file count as defaulted: dev would ignore them", named.Kafka.Brokers)
	}
}
