package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/deploy"
	"github.com/flywheel-dev/flywheel/eventlog"
	"github.com/flywheel-dev/flywheel/retrain"
	"github.com/flywheel-dev/flywheel/serve"
)

// The registry serves a control group's baseline version.
var _ serve.VersionFetcher = (*deploy.Registry)(nil)

// The event logger is shipped and closed by serve.Server.Run.
var _ serve.Shipper = (*eventlog.Logger)(nil)

// runServe is `flywheel serve`: the HTTP API.
func runServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("serve", getenv, stdout, stderr)
	if _, err := c.parse(args); err != nil {
		return err
	}
	e, err := c.env()
	if err != nil {
		return err
	}
	p, err := e.connect(ctx, true)
	if err != nil {
		return err
	}
	defer p.Close()
	g, gctx := errgroup.WithContext(ctx)
	if err := e.startServe(gctx, g, p, false, nil); err != nil {
		return err
	}
	return g.Wait()
}

// startServe builds the HTTP API and runs it (with its event logger's
// shipping and shutdown order: serve.Server.Run) and its model-event watcher
// in g. When it fails before Run is started, it closes the logger itself.
func (e *env) startServe(ctx context.Context, g *errgroup.Group, p *parts, open bool, rt *retrain.Retrainer) error {
	spoolDir := e.cfg.Serve.SpoolDir
	if spoolDir == "" {
		dir, err := os.MkdirTemp("", "flywheel-spool-")
		if err != nil {
			return err
		}
		spoolDir = dir
		e.log.Warn("serve.spool_dir is not set: spooling in a temporary directory, which does not survive a restart of the machine", "dir", dir)
	}
	logger, err := eventlog.NewLogger(e.cfg.Kafka, eventlog.SpoolOptions{Dir: spoolDir, MaxBytes: e.cfg.Serve.SpoolMaxBytes}, p.promReg, e.log.With("component", "events"))
	if err != nil {
		return err
	}
	admin := serve.Admin{
		Promote:  p.registry.Promote,
		Rollback: p.registry.Rollback,
		Describe: func(ctx context.Context, name string, history int) (any, error) {
			d, err := e.describeWithLift(ctx, p, name, history)
			if err != nil {
				return nil, err
			}
			return d, nil
		},
		Demote: p.registry.Demote,
		Canary: func(ctx context.Context, name string, version int, actor, reason string) error {
			if version == 0 {
				return p.registry.EndCanary(ctx, name, actor, reason)
			}
			return p.registry.StartCanary(ctx, name, version, actor, reason)
		},
	}
	var requests *deploy.RetrainRequests
	switch {
	case rt != nil: // dev: its own retrainer
		admin.Retrain = func(ctx context.Context, name string) (any, error) { return rt.Run(ctx, name, nil) }
	case p.events != nil: // serve: the elected scheduler's
		requests = deploy.NewRetrainRequests(p.events, 0, time.Now)
		admin.Retrain = func(ctx context.Context, name string) (any, error) {
			ev, err := requests.Request(ctx, name, "api")
			if err != nil {
				return nil, err
			}
			return decodeRun(ev)
		}
	}
	srv, err := serve.New(e.serveConfig(open), serve.Options{Registry: p.registry, Events: logger, Admin: admin, Registerer: p.promReg, Logger: e.log.With("component", "serve"), Now: time.Now})
	if err != nil {
		logger.Close(time.Second)
		return err
	}
	srv.SetInsights(e.insights(p))
	if err := srv.LoadControls(ctx); err != nil { // a baseline version that does not load stops the start
		logger.Close(time.Second)
		return err
	}
	ln, err := net.Listen("tcp", e.cfg.HTTP.Addr)
	if err != nil {
		logger.Close(time.Second)
		return fmt.Errorf("listen on %s: %w", e.cfg.HTTP.Addr, err)
	}
	e.log.Info("serving", "addr", "http://"+ln.Addr().String(), "models", len(e.cfg.Models), "spool", spoolDir)
	// Run ships the logger's events and, once ctx ends, drains the
	// requests in flight, ships what is spooled and closes the logger.
	g.Go(func() error { return srv.Run(ctx, ln) })
	g.Go(func() error {
		return deploy.Watch(ctx, e.cfg.Kafka, e.log, func(ev flywheel.ModelEvent) {
			srv.OnModelEvent(ctx, ev)
			if requests != nil {
				requests.OnModelEvent(ev)
			}
		})
	})
	return nil
}
