// Package kafka is Flywheel's thin adapter to Kafka: connection settings
// (TLS and SASL, security.go: every writer, reader, consumer group and
// admin client the product opens is made here, with them), topic names and
// setup (replication, min.insync.replicas, retention), readers and writers
// configured the way every component needs them, model-event publishing and
// reading (events.go), the retrain election (elect.go), consumer lag, and
// the embedded Kafka-protocol broker that `flywheel dev` runs when no
// brokers are named.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// Config says where the brokers are and how topics are named and made.
type Config struct {
	Brokers []string `yaml:"brokers"`
	// TopicPrefix is put before every topic name ("" in production; tests use
	// it to keep their topics apart).
	TopicPrefix string `yaml:"topic_prefix"`
	// Partitions of the decisions and feedback topics when Flywheel creates
	// them; default 8. Model events always have one partition.
	Partitions int `yaml:"partitions"`
	// ReplicationFactor of topics Flywheel creates; default 1.
	ReplicationFactor int `yaml:"replication_factor"`
	// MinInsyncReplicas is the min.insync.replicas of the topics Flywheel
	// creates: how many replicas must have a record before a write (acks
	// from all in-sync replicas) succeeds. Default: 2 when the replication
	// factor is 3 or more, else 1; at most the replication factor.
	MinInsyncReplicas int `yaml:"min_insync_replicas"`
	// Retention is the retention.ms of the decisions, feedback,
	// model-events and dead-letter topics Flywheel creates (0: the
	// broker's log.retention, 7 days unless changed). Ingest must keep up
	// within it. The installation topic is kept forever, the spool
	// watermarks for a day.
	Retention time.Duration `yaml:"retention"`
	// RetentionBytes is the retention.bytes (per partition) of the same
	// topics (0: the broker's, unbounded unless changed).
	RetentionBytes int64 `yaml:"retention_bytes"`
	// TLS and SASL are how every Kafka client Flywheel opens connects
	// (security.go); both empty: plaintext, unauthenticated.
	TLS  TLSConfig  `yaml:"tls"`
	SASL SASLConfig `yaml:"sasl"`
}

// Topics are the names of Flywheel's topics.
type Topics struct {
	Decisions   string
	Feedback    string
	ModelEvents string
	DLQ         string
	// Election is a one-partition topic whose consumer group elects the
	// retrain scheduler that runs the schedules.
	Election string
	// Installation is a one-partition topic whose first record names the
	// installation that owns the topics (Claim); it is never deleted.
	Installation string
	// SpoolWatermarks is a one-partition topic where every serving process
	// says, every second or so, through when the feedback it received has
	// left its spool for Kafka (flywheel.SpoolWatermark); ingest reads it.
	SpoolWatermarks string
}

// Topics returns the topic names under the configured prefix.
func (c Config) Topics() Topics {
	p := c.TopicPrefix
	return Topics{
		Decisions:       p + "flywheel.decisions",
		Feedback:        p + "flywheel.feedback",
		ModelEvents:     p + "flywheel.model-events",
		DLQ:             p + "flywheel.dlq",
		Election:        p + "flywheel.retrain-election",
		Installation:    p + "flywheel.installation",
		SpoolWatermarks: p + "flywheel.spool-watermarks",
	}
}

// Validate reports the first bad field.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("kafka.brokers is empty")
	}
	for i, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return fmt.Errorf("kafka.brokers[%d] %q is not host:port", i, b)
		}
	}
	if c.Partitions < 0 || c.ReplicationFactor < 0 {
		return errors.New("kafka.partitions and kafka.replication_factor must not be negative")
	}
	if c.MinInsyncReplicas < 0 {
		return errors.New("kafka.min_insync_replicas must not be negative")
	}
	if c.MinInsyncReplicas > c.replication() {
		return fmt.Errorf("kafka.min_insync_replicas (%d) is above kafka.replication_factor (%d): no write could succeed", c.MinInsyncReplicas, c.replication())
	}
	if c.Retention < 0 || c.Retention > 0 && c.Retention < time.Hour {
		return fmt.Errorf("kafka.retention must be 0 (the broker's) or at least 1h; got %v", c.Retention)
	}
	if c.RetentionBytes < 0 {
		return errors.New("kafka.retention_bytes must not be negative")
	}
	if _, err := c.security(); err != nil {
		return err
	}
	return nil
}

func (c Config) partitions() int {
	if c.Partitions <= 0 {
		return 8
	}
	return c.Partitions
}

func (c Config) replication() int {
	if c.ReplicationFactor <= 0 {
		return 1
	}
	return c.ReplicationFactor
}

func (c Config) minInsync() int {
	switch {
	case c.MinInsyncReplicas > 0:
		return c.MinInsyncReplicas
	case c.replication() >= 3:
		return 2
	}
	return 1
}

// topicConfigs returns the configuration of the topics Flywheel creates:
// every topic min.insync.replicas, and those of kafka.retention and
// kafka.retention_bytes (retained) their retention, extra added last.
func (c Config) topicConfigs(retained bool, extra ...kafkago.ConfigEntry) []kafkago.ConfigEntry {
	out := []kafkago.ConfigEntry{{ConfigName: "min.insync.replicas", ConfigValue: strconv.Itoa(c.minInsync())}}
	if retained && c.Retention > 0 {
		out = append(out, kafkago.ConfigEntry{ConfigName: "retention.ms", ConfigValue: strconv.FormatInt(c.Retention.Milliseconds(), 10)})
	}
	if retained && c.RetentionBytes > 0 {
		out = append(out, kafkago.ConfigEntry{ConfigName: "retention.bytes", ConfigValue: strconv.FormatInt(c.RetentionBytes, 10)})
	}
	return append(out, extra...)
}

// TopicConfigs returns the topics EnsureTopics creates, with their
// partitions, replication and configuration.
func (c Config) TopicConfigs() []kafkago.TopicConfig {
	t := c.Topics()
	rf := c.replication()
	return []kafkago.TopicConfig{
		{Topic: t.Decisions, NumPartitions: c.partitions(), ReplicationFactor: rf, ConfigEntries: c.topicConfigs(true)},
		{Topic: t.Feedback, NumPartitions: c.partitions(), ReplicationFactor: rf, ConfigEntries: c.topicConfigs(true)},
		{Topic: t.ModelEvents, NumPartitions: 1, ReplicationFactor: rf, ConfigEntries: c.topicConfigs(true)},
		{Topic: t.DLQ, NumPartitions: 1, ReplicationFactor: rf, ConfigEntries: c.topicConfigs(true)},
		{Topic: t.Election, NumPartitions: 1, ReplicationFactor: rf, ConfigEntries: c.topicConfigs(false)},
		{Topic: t.SpoolWatermarks, NumPartitions: 1, ReplicationFactor: rf, ConfigEntries: c.topicConfigs(false,
			kafkago.ConfigEntry{ConfigName: "retention.ms", ConfigValue: "86400000"})},
		{Topic: t.Installation, NumPartitions: 1, ReplicationFactor: rf, ConfigEntries: c.topicConfigs(false,
			kafkago.ConfigEntry{ConfigName: "retention.ms", ConfigValue: "-1"}, kafkago.ConfigEntry{ConfigName: "retention.bytes", ConfigValue: "-1"})},
	}
}

// EnsureTopics creates Flywheel's topics that do not exist yet (TopicConfigs:
// kafka.replication_factor, kafka.min_insync_replicas, kafka.retention), and
// waits until every one of them has a leader. Running it again is harmless;
// topics that exist are left as they are.
func EnsureTopics(ctx context.Context, c Config) error {
	want := c.TopicConfigs()
	client, done := c.client(10 * time.Second)
	defer done()
	resp, err := client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: want})
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	for topic, err := range resp.Errors {
		if err != nil && !errors.Is(err, kafkago.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", topic, err)
		}
	}
	names := make([]string, len(want))
	for i, w := range want {
		names[i] = w.Topic
	}
	for {
		meta, err := client.Metadata(ctx, &kafkago.MetadataRequest{Topics: names})
		if err == nil && allLed(meta, len(names)) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for topics to have leaders: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func allLed(meta *kafkago.MetadataResponse, n int) bool {
	if len(meta.Topics) != n {
		return false
	}
	for _, t := range meta.Topics {
		if t.Error != nil || len(t.Partitions) == 0 {
			return false
		}
		for _, p := range t.Partitions {
			if p.Error != nil || p.Leader.Host == "" {
				return false
			}
		}
	}
	return true
}

// WaitReady waits until a broker answers a metadata request, or ctx ends.
// A refusal of this client's TLS or SASL settings (a wrong password, an
// untrusted certificate) is returned at once, naming the setting.
func WaitReady(ctx context.Context, c Config) error {
	client, done := c.client(2 * time.Second)
	defer done()
	var last error
	for {
		if _, err := client.Metadata(ctx, &kafkago.MetadataRequest{}); err == nil {
			return nil
		} else if refused := c.refusal(err); refused != nil {
			return fmt.Errorf("kafka at %v: %w", c.Brokers, refused)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka at %v is not reachable: %w (last error: %v)%s", c.Brokers, ctx.Err(), last, c.hint())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// maxBatchBytes bounds one produce request's batch for a partition.
const maxBatchBytes = 1_000_000

// MaxRecordBytes is the largest record (key and value) Flywheel writes: one
// record alone must fit a produce batch, with room for its framing. Serving
// refuses a request whose decision record would be larger, rather than
// spool a record no broker with default settings takes.
const MaxRecordBytes = maxBatchBytes - 4096

// NewWriter returns a synchronous writer for topic that waits for all
// in-sync replicas, batches concurrent writes for at most 2 ms, and routes
// records by key hash so that all records of one key keep their order.
//
// Its connections use kafka.tls and kafka.sasl; if those cannot be read
// (Validate says so first), every write fails naming the setting.
func NewWriter(c Config, topic string) *kafkago.Writer {
	w := &kafkago.Writer{
		Addr:         kafkago.TCP(c.Brokers...),
		Topic:        topic,
		Balancer:     &kafkago.Hash{},
		RequiredAcks: kafkago.RequireAll,
		BatchTimeout: 2 * time.Millisecond,
		BatchSize:    1000,
		// A produce request's batch for one partition must stay under the
		// broker's message.max.bytes (1 MiB unless raised): larger ones are
		// refused whole ("Message Size Too Large"), which large decisions
		// (20 actions of 30 features are ~14 KB each) reached at 1000 a batch.
		BatchBytes:             maxBatchBytes,
		MaxAttempts:            5,
		WriteBackoffMin:        50 * time.Millisecond,
		WriteBackoffMax:        time.Second,
		AllowAutoTopicCreation: false,
	}
	if t := c.transport(); t != nil { // a nil *Transport in the interface would not be kafka-go's default
		w.Transport = t
	}
	return w
}

// fetchMaxWait bounds a fetch of an idle partition: a fetch returns as
// soon as there is a record, so it adds no latency, but closing a reader
// or leaving a generation waits for the fetches in flight. kafka-go asks
// the broker to wait this long less a second (less a quarter below one
// second) and gives up itself at the full time: at the 200-250 ms used
// before, the broker's empty answer had ~60 ms of slack, and on a busy
// machine fetches of idle partitions kept ending in an i/o timeout, a
// closed connection and a new dial, metadata request and offset lookup.
// 1.5 s: the broker answers an idle fetch after 0.5 s, with 1 s of slack.
const fetchMaxWait = 1500 * time.Millisecond

// NewGroupReader returns a consumer-group reader over topics that never
// commits by itself: the caller commits after it has processed.
func NewGroupReader(c Config, group string, topics ...string) *kafkago.Reader {
	return NewLoggedGroupReader(c, nil, group, topics...)
}

// NewLoggedGroupReader is NewGroupReader whose group events (generations
// joined, partitions assigned and the offsets each starts from, offsets
// committed) and read errors go to log at debug level.
func NewLoggedGroupReader(c Config, log *slog.Logger, group string, topics ...string) *kafkago.Reader {
	var logger, errorLogger kafkago.Logger
	if log != nil && log.Enabled(context.Background(), slog.LevelDebug) {
		logger, errorLogger = debugLogger(log, "kafka group reader"), debugLogger(log, "kafka group reader error")
	}
	return kafkago.NewReader(kafkago.ReaderConfig{
		Logger:                logger,
		ErrorLogger:           errorLogger,
		Brokers:               c.Brokers,
		Dialer:                c.dialer(),
		GroupID:               group,
		GroupTopics:           topics,
		MinBytes:              1,
		MaxBytes:              32 << 20,
		MaxWait:               fetchMaxWait,
		QueueCapacity:         8192, // keep fetching while a batch is inserted
		CommitInterval:        0,    // synchronous, explicit commits only
		StartOffset:           kafkago.FirstOffset,
		HeartbeatInterval:     time.Second,
		SessionTimeout:        10 * time.Second,
		RebalanceTimeout:      10 * time.Second,
		JoinGroupBackoff:      500 * time.Millisecond,
		WatchPartitionChanges: true,
		ReadBackoffMin:        50 * time.Millisecond,
		ReadBackoffMax:        500 * time.Millisecond,
	})
}

// debugLogger logs kafka-go's messages at debug level under msg, leaving
// out the ones every fetch of every partition prints.
func debugLogger(log *slog.Logger, msg string) kafkago.Logger {
	return kafkago.LoggerFunc(func(format string, args ...any) {
		for _, noise := range []string{"no messages received", "initializing kafka reader", "is seeking to offset", "heartbeat"} {
			if strings.Contains(format, noise) {
				return
			}
		}
		log.Debug(msg, "event", strings.TrimSpace(fmt.Sprintf(format, args...)))
	})
}

// NewTailReader returns a reader of partition 0 of a one-partition topic,
// outside any group, starting at offset (kafkago.FirstOffset or LastOffset):
// every serving replica reads every model event.
func NewTailReader(c Config, topic string, offset int64) (*kafkago.Reader, error) {
	r := kafkago.NewReader(kafkago.ReaderConfig{
		Brokers:        c.Brokers,
		Dialer:         c.dialer(),
		Topic:          topic,
		Partition:      0,
		MinBytes:       1,
		MaxBytes:       4 << 20,
		MaxWait:        fetchMaxWait,
		ReadBackoffMin: 50 * time.Millisecond,
		ReadBackoffMax: 500 * time.Millisecond,
	})
	if err := r.SetOffset(offset); err != nil {
		r.Close()
		return nil, fmt.Errorf("set offset on %s: %w", topic, err)
	}
	return r, nil
}

// Port returns the port of a host:port address, or 0.
func Port(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}
