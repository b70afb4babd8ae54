package feedback

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/kafka"
)

// Writer is the part of a Kafka writer the logger uses.
type Writer interface {
	WriteMessages(ctx context.Context, msgs ...kafkago.Message) error
	Close() error
}

var _ Writer = (*kafkago.Writer)(nil)

// Logger writes decisions and feedback to their Kafka topics. Each call
// returns once the records are acknowledged by all in-sync replicas, or with
// an error: a caller that got nil knows its records are in Kafka. It is safe
// for concurrent use; concurrent calls share batches.
type Logger struct {
	decisions, feedback Writer
	log                 *slog.Logger
	logged              *prometheus.CounterVec
	errors              *prometheus.CounterVec
}

// NewLogger returns a logger writing to the topics of cfg.
func NewLogger(cfg kafka.Config, reg prometheus.Registerer, log *slog.Logger) (*Logger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t := cfg.Topics()
	return NewLoggerWith(kafka.NewWriter(cfg, t.Decisions), kafka.NewWriter(cfg, t.Feedback), reg, log)
}

// NewLoggerWith returns a logger over the given writers.
func NewLoggerWith(decisions, feedback Writer, reg prometheus.Registerer, log *slog.Logger) (*Logger, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Logger{
		decisions: decisions,
		feedback:  feedback,
		log:       log,
		logged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_events_logged_total", Help: "Events acknowledged by Kafka, by kind (decision, feedback).",
		}, []string{"kind"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_kafka_write_errors_total", Help: "Kafka writes that failed, by kind; the caller got the error.",
		}, []string{"kind"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{l.logged, l.errors} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	return l, nil
}

// LogDecision writes d to the decisions topic, keyed by its event id.
func (l *Logger) LogDecision(ctx context.Context, d *flywheel.Decision) error {
	v, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode decision %s: %w", d.EventID, err)
	}
	if err := l.decisions.WriteMessages(ctx, kafkago.Message{Key: []byte(d.EventID), Value: v}); err != nil {
		l.errors.WithLabelValues("decision").Inc()
		return flywheel.Errorf(flywheel.EUNAVAILABLE, "the decision could not be logged: %v", err)
	}
	l.logged.WithLabelValues("decision").Inc()
	return nil
}

// LogFeedback writes fs to the feedback topic, each keyed by its event id.
func (l *Logger) LogFeedback(ctx context.Context, fs []flywheel.Feedback) error {
	msgs := make([]kafkago.Message, len(fs))
	for i := range fs {
		v, err := json.Marshal(&fs[i])
		if err != nil {
			return fmt.Errorf("encode feedback %s: %w", fs[i].FeedbackID, err)
		}
		msgs[i] = kafkago.Message{Key: []byte(fs[i].EventID), Value: v}
	}
	if err := l.feedback.WriteMessages(ctx, msgs...); err != nil {
		l.errors.WithLabelValues("feedback").Add(float64(len(fs)))
		return flywheel.Errorf(flywheel.EUNAVAILABLE, "the feedback could not be logged: %v", err)
	}
	l.logged.WithLabelValues("feedback").Add(float64(len(fs)))
	return nil
}

// Close flushes and closes both writers.
func (l *Logger) Close() error {
	err1 := l.decisions.Close()
	err2 := l.feedback.Close()
	if err1 != nil {
		return fmt.Errorf("close decisions writer: %w", err1)
	}
	if err2 != nil {
		return fmt.Errorf("close feedback writer: %w", err2)
	}
	return nil
}
