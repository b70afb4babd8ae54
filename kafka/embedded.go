package kafka

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Embedded is an in-process broker that speaks the Kafka protocol (franz-go's
// kfake). It keeps everything in memory: it is for trying Flywheel out and for
// fast unit tests, never for production. Integration tests use a real broker.
type Embedded struct {
	cluster *kfake.Cluster
}

// StartEmbedded starts the embedded broker on 127.0.0.1:port (0 picks a free
// port). Close stops it.
func StartEmbedded(port int) (*Embedded, error) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port))
	if err != nil {
		return nil, fmt.Errorf("start embedded kafka: %w", err)
	}
	return &Embedded{cluster: c}, nil
}

// Brokers returns the addresses to connect to.
func (e *Embedded) Brokers() []string { return e.cluster.ListenAddrs() }

// Close stops the broker; everything it held is gone.
func (e *Embedded) Close() { e.cluster.Close() }
