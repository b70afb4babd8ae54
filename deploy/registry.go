package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/model"
)

// Aliases.
const (
	Champion = "champion"
	Canary   = "canary"
)

// Publisher is where model events go (*kafka.EventPublisher, on
// flywheel.model-events). Publish returns once the event is stored, or the
// error; it must be safe for concurrent use.
type Publisher interface {
	Publish(ctx context.Context, e flywheel.ModelEvent) error
}

// RegistryStore is where the registry keeps its rows: the versions (the
// models table) and every move of every alias (the deployments table). It
// stores and reads rows only; the numbering, the checksums and the rules of
// the moves are the Registry's. It must be safe for concurrent use.
// *clickhouse.Registry is one.
type RegistryStore interface {
	// LatestVersion returns the highest stored version of name, 0 if none.
	LatestVersion(ctx context.Context, name string) (int, error)
	// InsertVersion stores one version (Size is not stored).
	InsertVersion(ctx context.Context, v clickhouse.ModelVersion) error
	// Version returns one version with its artifact, false if there is none.
	Version(ctx context.Context, name string, version int) (clickhouse.ModelVersion, bool, error)
	// Versions lists the newest limit versions of name (all when limit is
	// 0), newest first, with their Size
	// but without their artifacts.
	Versions(ctx context.Context, name string, limit int) ([]clickhouse.ModelVersion, error)
	// Alias returns the version of alias's newest move (by Seq), 0 if none.
	Alias(ctx context.Context, name, alias string) (int, error)
	// InsertMove records one move of an alias.
	InsertMove(ctx context.Context, m clickhouse.AliasMove) error
	// Moves returns the latest limit moves of name's aliases (every one
	// when limit is 0), newest first.
	Moves(ctx context.Context, name string, limit int) ([]clickhouse.AliasMove, error)
}

// Version is one registered version of a model.
type Version struct {
	Name      string          `json:"name"`
	Version   int             `json:"version"`
	Kind      string          `json:"kind"`
	CreatedAt time.Time       `json:"created_at"`
	SHA256    string          `json:"sha256"`
	Size      int             `json:"size_bytes"`
	Manifest  json.RawMessage `json:"manifest,omitempty"`
	Metrics   json.RawMessage `json:"metrics,omitempty"`
	Artifact  []byte          `json:"-"`
}

// Deployment is one move of an alias.
type Deployment struct {
	Name            string    `json:"name"`
	Alias           string    `json:"alias"`
	Version         int       `json:"version"`
	PreviousVersion int       `json:"previous_version"`
	Time            time.Time `json:"ts"`
	Actor           string    `json:"actor"`
	Reason          string    `json:"reason"`
}

// Registry is the model registry in ClickHouse. It is safe for concurrent
// use.
type Registry struct {
	store  RegistryStore
	events Publisher
	log    *slog.Logger
	now    func() time.Time
}

// NewRegistry returns a registry over store (clickhouse.NewRegistry on the
// migrated database). events may be nil, in which case no model events are
// published (tools that only read). It returns an error if store is nil.
func NewRegistry(store RegistryStore, events Publisher, log *slog.Logger, now func() time.Time) (*Registry, error) {
	if store == nil {
		return nil, errors.New("deploy: nil registry store")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Registry{store: store, events: events, log: log, now: now}, nil
}

// Register stores artifact as the next version of name and returns its
// number. manifest and metrics are stored as JSON.
func (r *Registry) Register(ctx context.Context, name, kind string, artifact []byte, manifest, metrics any) (int, error) {
	latest, err := r.Latest(ctx, name)
	if err != nil {
		return 0, err
	}
	v := latest + 1
	if err := r.insert(ctx, name, v, kind, artifact, manifest, metrics); err != nil {
		return 0, err
	}
	r.publish(ctx, flywheel.ModelEvent{Type: flywheel.EventRegistered, Model: name, Version: v})
	return v, nil
}

func (r *Registry) insert(ctx context.Context, name string, v int, kind string, artifact []byte, manifest, metrics any) error {
	man, err := json.Marshal(manifest)
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	met, err := json.Marshal(metrics)
	if err != nil {
		return fmt.Errorf("encode metrics: %w", err)
	}
	sum := sha256.Sum256(artifact)
	return r.store.InsertVersion(ctx, clickhouse.ModelVersion{Name: name, Version: v, Kind: kind, CreatedAt: r.now().UTC(),
		Artifact: artifact, SHA256: hex.EncodeToString(sum[:]), Manifest: string(man), Metrics: string(met)})
}

// Latest returns the highest registered version of name, 0 if none.
func (r *Registry) Latest(ctx context.Context, name string) (int, error) {
	return r.store.LatestVersion(ctx, name)
}

// Get returns a version with its artifact, checking the artifact against the
// stored sha256. It returns an ENOTFOUND error if there is no such version.
func (r *Registry) Get(ctx context.Context, name string, version int) (*Version, error) {
	row, ok, err := r.store.Version(ctx, name, version)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, flywheel.Errorf(flywheel.ENOTFOUND, "model %s has no version %d", name, version)
	}
	v := versionOf(row)
	sum := sha256.Sum256(v.Artifact)
	if hex.EncodeToString(sum[:]) != v.SHA256 {
		return nil, fmt.Errorf("%s v%d: %w: artifact does not match its sha256", name, version, model.ErrCorrupt)
	}
	return v, nil
}

// Versions lists the versions of name, newest first, without artifacts.
func (r *Registry) Versions(ctx context.Context, name string) ([]Version, error) {
	return r.RecentVersions(ctx, name, 0)
}

// RecentVersions lists the newest limit versions of name (all when limit is
// 0), newest first, without artifacts.
func (r *Registry) RecentVersions(ctx context.Context, name string, limit int) ([]Version, error) {
	rows, err := r.store.Versions(ctx, name, limit)
	var out []Version
	for _, row := range rows {
		out = append(out, *versionOf(row))
	}
	return out, err
}

// versionOf is the Version of a stored row.
func versionOf(row clickhouse.ModelVersion) *Version {
	return &Version{Name: row.Name, Version: row.Version, Kind: row.Kind, CreatedAt: row.CreatedAt, SHA256: row.SHA256,
		Size: row.Size, Manifest: json.RawMessage(row.Manifest), Metrics: json.RawMessage(row.Metrics), Artifact: row.Artifact}
}

// Alias returns the version an alias points at, 0 if it was never set.
func (r *Registry) Alias(ctx context.Context, name, alias string) (int, error) {
	return r.store.Alias(ctx, name, alias)
}

// Champion returns the champion's version and artifact. It returns an
// ENOTFOUND error if the model has no champion yet.
func (r *Registry) Champion(ctx context.Context, name string) (int, []byte, error) {
	v, err := r.Alias(ctx, name, Champion)
	if err != nil {
		return 0, nil, err
	}
	if v == 0 {
		return 0, nil, flywheel.Errorf(flywheel.ENOTFOUND, "model %s has no champion", name)
	}
	ver, err := r.Get(ctx, name, v)
	if err != nil {
		return 0, nil, err
	}
	return v, ver.Artifact, nil
}

// Canary returns the canary's version and artifact, or 0 and nil when the
// model has no canary.
func (r *Registry) Canary(ctx context.Context, name string) (int, []byte, error) {
	v, err := r.Alias(ctx, name, Canary)
	if err != nil || v == 0 {
		return 0, nil, err
	}
	ver, err := r.Get(ctx, name, v)
	if err != nil {
		return 0, nil, err
	}
	return v, ver.Artifact, nil
}

// StartCanary makes version the canary of name: serving sends it the
// configured share of traffic. It returns ENOTFOUND if the version does not
// exist and ECONFLICT if it is the champion.
func (r *Registry) StartCanary(ctx context.Context, name string, version int, actor, reason string) error {
	latest, err := r.Latest(ctx, name)
	if err != nil {
		return err
	}
	if version < 1 || version > latest {
		return flywheel.Errorf(flywheel.ENOTFOUND, "model %s has no version %d", name, version)
	}
	if champ, err := r.Alias(ctx, name, Champion); err != nil {
		return err
	} else if champ == version {
		return flywheel.Errorf(flywheel.ECONFLICT, "v%d is already the champion of %s", version, name)
	}
	return r.move(ctx, flywheel.EventCanaryStarted, name, Canary, version, actor, reason)
}

// EndCanary stops sending traffic to the canary of name.
func (r *Registry) EndCanary(ctx context.Context, name, actor, reason string) error {
	if v, err := r.Alias(ctx, name, Canary); err != nil {
		return err
	} else if v == 0 {
		return flywheel.Errorf(flywheel.ECONFLICT, "model %s has no canary", name)
	}
	return r.move(ctx, flywheel.EventCanaryEnded, name, Canary, 0, actor, reason)
}

// Promote makes version the champion of name, records who and why, and
// publishes the event. It returns ENOTFOUND if the version does not exist.
func (r *Registry) Promote(ctx context.Context, name string, version int, actor, reason string) error {
	latest, err := r.Latest(ctx, name)
	if err != nil {
		return err
	}
	if version < 1 || version > latest {
		return flywheel.Errorf(flywheel.ENOTFOUND, "model %s has no version %d", name, version)
	}
	if err := r.move(ctx, flywheel.EventPromoted, name, Champion, version, actor, reason); err != nil {
		return err
	}
	if canary, err := r.Alias(ctx, name, Canary); err == nil && canary == version {
		return r.move(ctx, flywheel.EventCanaryEnded, name, Canary, 0, actor, "the canary became the champion")
	}
	return nil
}

// Demote takes version of name out of service if it is live: a canary is
// ended, a champion rolled back to the one before it. It returns ECONFLICT
// if version is neither (several replicas may demote the same version; the
// first one does it).
func (r *Registry) Demote(ctx context.Context, name string, version int, actor, reason string) error {
	if c, err := r.Alias(ctx, name, Canary); err != nil {
		return err
	} else if c == version {
		return r.move(ctx, flywheel.EventCanaryEnded, name, Canary, 0, actor, reason)
	}
	if h, err := r.Alias(ctx, name, Champion); err != nil {
		return err
	} else if h == version {
		_, err := r.Rollback(ctx, name, actor, reason)
		return err
	}
	return flywheel.Errorf(flywheel.ECONFLICT, "v%d of %s is not live", version, name)
}

// Rollback makes the champion before the current one the champion again and
// returns its version. It returns ECONFLICT if there is none to go back to.
func (r *Registry) Rollback(ctx context.Context, name, actor, reason string) (int, error) {
	hist, err := r.History(ctx, name)
	if err != nil {
		return 0, err
	}
	var cur, prev int
	for _, d := range hist { // newest first
		if d.Alias != Champion {
			continue
		}
		if cur == 0 {
			cur = d.Version
		} else if d.Version != cur {
			prev = d.Version
			break
		}
	}
	if prev == 0 {
		return 0, flywheel.Errorf(flywheel.ECONFLICT, "model %s has no earlier champion to roll back to", name)
	}
	return prev, r.move(ctx, flywheel.EventRolledBack, name, Champion, prev, actor, reason)
}

func (r *Registry) move(ctx context.Context, typ, name, alias string, version int, actor, reason string) error {
	prev, err := r.Alias(ctx, name, alias)
	if err != nil {
		return err
	}
	now := r.now().UTC()
	err = r.store.InsertMove(ctx, clickhouse.AliasMove{Name: name, Alias: alias, Version: version, PreviousVersion: prev,
		Time: now, Seq: uint64(now.UnixNano()), Actor: actor, Reason: reason})
	if err != nil {
		return err
	}
	r.log.Info("alias moved", "model", name, "alias", alias, "version", version, "previous", prev, "actor", actor, "reason", reason)
	r.publish(ctx, flywheel.ModelEvent{Type: typ, Model: name, Alias: alias, Version: version, PreviousVersion: prev, Actor: actor, Reason: reason})
	return nil
}

// History returns every alias move of name, newest first.
func (r *Registry) History(ctx context.Context, name string) ([]Deployment, error) {
	return r.RecentHistory(ctx, name, 0)
}

// RecentHistory returns the latest limit alias moves of name, newest first
// (every one when limit is 0): what a page or an API answer shows, bounded.
func (r *Registry) RecentHistory(ctx context.Context, name string, limit int) ([]Deployment, error) {
	moves, err := r.store.Moves(ctx, name, limit)
	var out []Deployment
	for _, m := range moves {
		out = append(out, Deployment{Name: m.Name, Alias: m.Alias, Version: m.Version, PreviousVersion: m.PreviousVersion,
			Time: m.Time, Actor: m.Actor, Reason: m.Reason})
	}
	return out, err
}

// Bootstrap gives a model with no champion its first version: a fresh model
// of the configured shape, which for a ranker is the uniformly random policy
// the loop starts from. Several processes may bootstrap at once: version 1 is
// the same for all of them.
func (r *Registry) Bootstrap(ctx context.Context, name string, mc flywheel.ModelConfig) error {
	cur, err := r.Alias(ctx, name, Champion)
	if err != nil || cur != 0 {
		return err
	}
	latest, err := r.Latest(ctx, name)
	if err != nil {
		return err
	}
	if latest == 0 {
		m, err := model.FromConfig(mc)
		if err != nil {
			return fmt.Errorf("bootstrap %s: %w", name, err)
		}
		art, err := m.MarshalBinary()
		if err != nil {
			return fmt.Errorf("bootstrap %s: %w", name, err)
		}
		manifest := map[string]any{"bootstrap": true, "policy": "uniform random (all weights zero)"}
		if err := r.insert(ctx, name, 1, mc.Kind, art, manifest, map[string]any{}); err != nil {
			return err
		}
		latest = 1
	}
	return r.Promote(ctx, name, 1, "bootstrap", "first version: a fresh model; a ranker's is uniformly random")
}

// publish sends a model event. A failure is logged, not returned: the alias
// has moved in ClickHouse, and serving replicas find it by their periodic
// registry poll.
func (r *Registry) publish(ctx context.Context, e flywheel.ModelEvent) {
	if r.events == nil {
		return
	}
	e.Schema = flywheel.SchemaVersion
	e.Time = r.now().UTC()
	if err := r.events.Publish(ctx, e); err != nil {
		r.log.Warn("publish model event failed; replicas will find the change by polling", "model", e.Model, "type", e.Type, "err", err)
	}
}
