package main

import (
	"context"
	"io"
	"time"

	"golang.org/x/sync/errgroup"

	flywheel "github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/deploy"
	"github.com/flywheel-dev/flywheel/kafka"
)

// runDev is `flywheel dev`: serve, ingest, retrain and the canary judge in
// one process, with the embedded Kafka-protocol broker unless brokers are
// given.
func runDev(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("dev", getenv, stdout, stderr)
	embeddedPort := c.fs.Int("embedded-kafka-port", 0, "port of the embedded broker (0: any free port)")
	if _, err := c.parse(args); err != nil {
		return err
	}
	e, err := c.env()
	if err != nil {
		return err
	}
	if !e.kafkaGiven {
		b, err := kafka.StartEmbedded(*embeddedPort)
		if err != nil {
			return err
		}
		defer b.Close()
		e.cfg.Kafka.Brokers = b.Brokers()
		e.log.Warn("using the EMBEDDED Kafka-protocol broker: in memory, for trying Flywheel out only; pass --kafka to use a real cluster", "brokers", b.Brokers())
	}
	open := e.open()
	if open {
		e.log.Warn("no API keys configured: the API is OPEN to anyone who can reach it (allowed under flywheel dev only)")
	}
	p, err := e.connect(ctx, true)
	if err != nil {
		return err
	}
	defer p.Close()
	rt, err := e.newRetrainer(p, p.promReg, e.log.With("component", "retrain"))
	if err != nil {
		return err
	}
	in, err := e.newIngester(p, e.log.With("component", "ingest"))
	if err != nil {
		return err
	}
	judge, err := deploy.NewJudge(deploy.JudgeOptions{Registry: p.registry, Rewards: clickhouse.NewRewards(p.conn, e.cfg.ClickHouse.Database()),
		Models: e.cfg.Models, Registerer: p.promReg, Logger: e.log.With("component", "deploy"), Now: time.Now})
	if err != nil {
		return err
	}
	var el *kafka.Elector
	if e.kafkaGiven {
		// Other dev or retrain processes may share this cluster: elect one
		// scheduler. The embedded broker belongs to this process alone.
		if el, err = kafka.NewElector(e.cfg.Kafka, e.log.With("component", "retrain")); err != nil {
			return err
		}
		rt.ElectWith(el)
		judge.ElectWith(el)
	}
	g, gctx := errgroup.WithContext(ctx)
	if err := e.startServe(gctx, g, p, open, rt); err != nil {
		return err
	}
	if el != nil {
		g.Go(func() error { return el.Run(gctx) })
	}
	g.Go(func() error { return in.Run(gctx) })
	// dev is the retrain scheduler: it answers `retrain --now` and the
	// admin API of other processes, so that their runs never overlap its own.
	rt.AnswerWith(p.events)
	g.Go(func() error {
		return deploy.Watch(gctx, e.cfg.Kafka, e.log, func(ev flywheel.ModelEvent) { rt.OnModelEvent(gctx, ev) })
	})
	g.Go(func() error { return rt.Schedule(gctx) })
	g.Go(func() error { return judge.Run(gctx, e.cfg.Deploy.CheckInterval) })
	return g.Wait()
}
