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
// models table) and every move of every alias (the deployments table), and
// the claims that keep two writers from taking one version number or one
// move seq. It stores and reads rows only; the numbering, the checksums and
// the rules of the moves are the Registry's. It must be safe for concurrent
// use. *clickhouse.Registry is one.
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
	// InsertMove records one move of an alias (and, when it has Restores,
	// that it is a rollback).
	InsertMove(ctx context.Context, m clickhouse.AliasMove) error
	// Moves returns the latest limit moves of name's aliases (every one
	// when limit is 0), newest first, with their Seq.
	Moves(ctx context.Context, name string, limit int) ([]clickhouse.AliasMove, error)
	// Rollbacks maps the seq of each rollback of name to the seq of the
	// move whose state it restored.
	Rollbacks(ctx context.Context, name string) (map[uint64]uint64, error)
	// Claim takes number n of what (clickhouse.ClaimVersion or ClaimMove)
	// of name for this caller alone; false: another caller has it, or its
	// row is stored. At most one caller ever gets true for one number.
	Claim(ctx context.Context, what, name string, n uint64) (bool, error)
	// Release gives up a claim whose row is stored.
	Release(ctx context.Context, what, name string, n uint64) error
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
	// Seq orders the moves of the model's aliases, one more for each
	// (earlier rows carry the writer's clock, in nanoseconds): the history
	// is ordered by it, never by Time, which is the writer's clock.
	Seq    uint64 `json:"seq"`
	Actor  string `json:"actor"`
	Reason string `json:"reason"`
}

// Registry is the model registry in ClickHouse. It is safe for concurrent
// use, and safe with many writers (processes) on one registry:
//
//   - a version number is claimed before its row is written
//     (RegistryStore.Claim), so no two writers store the same version, and
//     the numbers stay gapless unless a writer dies between its claim and
//     its row (that number is then skipped, never reused);
//   - every move of an alias is claimed the same way, at one more than the
//     newest seq the writer read, and decided on that state: a move is a
//     compare-and-set on the model's alias history, which is ordered by
//     seq and never by a writer's clock. A writer that loses the claim
//     reads the history again and decides again (a second replica
//     demoting the same version finds it already demoted);
//   - a rollback records the earlier move whose state it brings back, so
//     that a second rollback goes back past it (Rollback).
type Registry struct {
	store  RegistryStore
	events Publisher
	log    *slog.Logger
	now    func() time.Time
}

// NewRegistry returns a registry over store (clickhouse.NewRegistry on the
// migrated database, with WithCluster in cluster mode: without it, writers
// connected to different nodes could claim one number twice). events may
// be nil, in which case no model events are
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

// maxClaims bounds the claims of one registration or move: each lost claim
// means another writer got the number first.
const maxClaims = 100

// Register stores artifact as the next version of name and returns its
// number. manifest and metrics are stored as JSON. Concurrent registrations,
// in this process or others, get distinct numbers, one more each.
func (r *Registry) Register(ctx context.Context, name, kind string, artifact []byte, manifest, metrics any) (int, error) {
	v, err := r.allocate(ctx, name, 0, func(v int) error { return r.insert(ctx, name, v, kind, artifact, manifest, metrics) })
	if err != nil {
		return 0, err
	}
	r.publish(ctx, flywheel.ModelEvent{Type: flywheel.EventRegistered, Model: name, Version: v})
	return v, nil
}

// allocate claims the next free version of name above after (and above
// every stored one), stores it with write, releases the claim and returns
// the version. A version whose write failed stays claimed: it is skipped.
func (r *Registry) allocate(ctx context.Context, name string, after int, write func(v int) error) (int, error) {
	tried := after
	for range maxClaims {
		latest, err := r.Latest(ctx, name)
		if err != nil {
			return 0, err
		}
		v := max(latest, tried) + 1
		ok, err := r.store.Claim(ctx, clickhouse.ClaimVersion, name, uint64(v))
		if err != nil {
			return 0, fmt.Errorf("register %s: %w", name, err)
		}
		if !ok {
			tried = v
			continue
		}
		if err := write(v); err != nil {
			return 0, err
		}
		if err := r.store.Release(ctx, clickhouse.ClaimVersion, name, uint64(v)); err != nil {
			r.log.Warn("registry claim left behind (harmless: the version stays taken)", "model", name, "version", v, "err", err)
		}
		return v, nil
	}
	return 0, flywheel.Errorf(flywheel.ECONFLICT, "register %s: %d version numbers in a row were taken by other writers", name, maxClaims)
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

// Artifact returns the artifact of version of name, with Get's checks and
// errors (ENOTFOUND when there is no such version).
func (r *Registry) Artifact(ctx context.Context, name string, version int) ([]byte, error) {
	v, err := r.Get(ctx, name, version)
	if err != nil {
		return nil, err
	}
	return v.Artifact, nil
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
	if err := r.exists(ctx, name, version); err != nil {
		return err
	}
	return r.move(ctx, name, actor, reason, func(h *aliasHistory) (step, error) {
		if h.alias(Champion) == version {
			return step{}, flywheel.Errorf(flywheel.ECONFLICT, "v%d is already the champion of %s", version, name)
		}
		return step{typ: flywheel.EventCanaryStarted, alias: Canary, version: version}, nil
	})
}

// EndCanary stops sending traffic to the canary of name. It returns
// ECONFLICT if the model has no canary.
func (r *Registry) EndCanary(ctx context.Context, name, actor, reason string) error {
	return r.move(ctx, name, actor, reason, func(h *aliasHistory) (step, error) {
		if h.alias(Canary) == 0 {
			return step{}, flywheel.Errorf(flywheel.ECONFLICT, "model %s has no canary", name)
		}
		return step{typ: flywheel.EventCanaryEnded, alias: Canary}, nil
	})
}

// exists returns ENOTFOUND unless version of name is registered.
func (r *Registry) exists(ctx context.Context, name string, version int) error {
	latest, err := r.Latest(ctx, name)
	if err != nil {
		return err
	}
	if version < 1 || version > latest {
		return flywheel.Errorf(flywheel.ENOTFOUND, "model %s has no version %d", name, version)
	}
	return nil
}

// registeredWait bounds how long registered waits for a version to show.
var registeredWait = 30 * time.Second

// registered is exists for a version the caller has just registered: on a
// ClickHouse cluster the models table is replicated, and the node read may
// not have fetched the version yet (a replica back from a restart catches
// up once its ZooKeeper session is renewed, which can take half a minute),
// so a version above the latest one read is looked for again, every 250 ms,
// for up to registeredWait.
func (r *Registry) registered(ctx context.Context, name string, version int) error {
	deadline := time.Now().Add(registeredWait)
	for {
		err := r.exists(ctx, name, version)
		if flywheel.ErrorCode(err) != flywheel.ENOTFOUND || version < 1 || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Promote makes version the champion of name, records who and why, and
// publishes the event; a canary of that version ends. It returns ENOTFOUND
// if the version does not exist.
func (r *Registry) Promote(ctx context.Context, name string, version int, actor, reason string) error {
	if err := r.exists(ctx, name, version); err != nil {
		return err
	}
	if err := r.move(ctx, name, actor, reason, func(*aliasHistory) (step, error) {
		return step{typ: flywheel.EventPromoted, alias: Champion, version: version}, nil
	}); err != nil {
		return err
	}
	return r.endCanaryOf(ctx, name, version, actor)
}

// PromoteFrom is Promote on a condition, checked and acted on as one
// compare-and-set on the alias history: the champion is still champion and
// there is no canary (what a retrain judged its candidate against). It
// returns ECONFLICT, with no move, if the aliases moved, and ENOTFOUND if
// the version does not exist.
func (r *Registry) PromoteFrom(ctx context.Context, name string, version, champion int, actor, reason string) error {
	return r.deployFrom(ctx, name, version, champion, actor, reason, Champion)
}

// StartCanaryFrom is StartCanary on the condition of PromoteFrom.
func (r *Registry) StartCanaryFrom(ctx context.Context, name string, version, champion int, actor, reason string) error {
	return r.deployFrom(ctx, name, version, champion, actor, reason, Canary)
}

func (r *Registry) deployFrom(ctx context.Context, name string, version, champion int, actor, reason, alias string) error {
	if err := r.registered(ctx, name, version); err != nil {
		return err
	}
	return r.move(ctx, name, actor, reason, func(h *aliasHistory) (step, error) {
		if c := h.alias(Canary); c != 0 {
			return step{}, flywheel.Errorf(flywheel.ECONFLICT, "canary v%d of %s started", c, name)
		}
		if now := h.alias(Champion); now != champion {
			return step{}, flywheel.Errorf(flywheel.ECONFLICT, "the champion of %s moved from v%d to v%d", name, champion, now)
		}
		if alias == Canary {
			if version == champion {
				return step{}, flywheel.Errorf(flywheel.ECONFLICT, "v%d is already the champion of %s", version, name)
			}
			return step{typ: flywheel.EventCanaryStarted, alias: Canary, version: version}, nil
		}
		return step{typ: flywheel.EventPromoted, alias: Champion, version: version}, nil
	})
}

// endCanaryOf ends the canary of name if it is version, which has just
// become the champion.
func (r *Registry) endCanaryOf(ctx context.Context, name string, version int, actor string) error {
	err := r.move(ctx, name, actor, "the canary became the champion", func(h *aliasHistory) (step, error) {
		if h.alias(Canary) != version {
			return step{}, errNoMove
		}
		return step{typ: flywheel.EventCanaryEnded, alias: Canary}, nil
	})
	if errors.Is(err, errNoMove) {
		return nil
	}
	return err
}

// Demote takes version of name out of service if it is live: a canary is
// ended, a champion rolled back (Rollback). It returns ECONFLICT if version
// is neither: several replicas may demote the same version at once, and
// the first one does it (the decision and the move are one
// compare-and-set on the alias history).
func (r *Registry) Demote(ctx context.Context, name string, version int, actor, reason string) error {
	return r.move(ctx, name, actor, reason, func(h *aliasHistory) (step, error) {
		if h.alias(Canary) == version {
			return step{typ: flywheel.EventCanaryEnded, alias: Canary}, nil
		}
		if h.alias(Champion) == version {
			return h.rollback(name)
		}
		return step{}, flywheel.Errorf(flywheel.ECONFLICT, "v%d of %s is not live", version, name)
	})
}

// Rollback undoes the promotion that made the current champion of name:
// the champion before it is the champion again, and its version is
// returned. Rollbacks walk back through the history: after promotions of
// v1, v2 and v3, a rollback makes v2 the champion and a second one v1 (not
// v3 again); promoting again starts from there. It returns ECONFLICT if
// there is nothing earlier to go back to.
func (r *Registry) Rollback(ctx context.Context, name, actor, reason string) (int, error) {
	var to int
	err := r.move(ctx, name, actor, reason, func(h *aliasHistory) (step, error) {
		s, err := h.rollback(name)
		to = s.version
		return s, err
	})
	if err != nil {
		return 0, err
	}
	return to, nil
}

// errNoMove is what a move's decision returns when there is nothing to do.
var errNoMove = errors.New("no move needed")

// step is a move that a decision on the alias history makes.
type step struct {
	typ      string // the model event's type
	alias    string
	version  int    // 0: unset the alias
	restores uint64 // a rollback: the seq of the move whose state it brings back
}

// aliasHistory is every move of one model's aliases, oldest first, as read
// before a move: seq is the newest move's (0: none), undo maps each
// rollback's seq to the seq of the move it restored.
type aliasHistory struct {
	moves []clickhouse.AliasMove
	undo  map[uint64]uint64
	seq   uint64
}

// alias returns the version alias points at (0: unset).
func (h *aliasHistory) alias(alias string) int {
	for i := len(h.moves) - 1; i >= 0; i-- {
		if h.moves[i].Alias == alias {
			return h.moves[i].Version
		}
	}
	return 0
}

// rollback returns the rollback of the champion: to the state before the
// promotion that made the current champion, skipping states with the same
// version. Each champion move has a state to go back to: a promotion's is
// the state before it; a rollback's is that of the state it restored.
func (h *aliasHistory) rollback(name string) (step, error) {
	back := map[uint64]uint64{}
	version := map[uint64]int{}
	var cur uint64
	for _, m := range h.moves {
		if m.Alias != Champion {
			continue
		}
		version[m.Seq] = m.Version
		if restored, ok := h.undo[m.Seq]; ok {
			back[m.Seq] = back[restored]
		} else {
			back[m.Seq] = cur
		}
		cur = m.Seq
	}
	to := back[cur]
	for to != 0 && version[to] == version[cur] {
		to = back[to]
	}
	if cur == 0 || to == 0 {
		return step{}, flywheel.Errorf(flywheel.ECONFLICT, "model %s has no earlier champion to roll back to", name)
	}
	return step{typ: flywheel.EventRolledBack, alias: Champion, version: version[to], restores: to}, nil
}

// history reads the alias history of name.
func (r *Registry) history(ctx context.Context, name string) (*aliasHistory, error) {
	moves, err := r.store.Moves(ctx, name, 0)
	if err != nil {
		return nil, err
	}
	undo, err := r.store.Rollbacks(ctx, name)
	if err != nil {
		return nil, err
	}
	h := &aliasHistory{moves: make([]clickhouse.AliasMove, len(moves)), undo: undo}
	for i, m := range moves { // newest first
		h.moves[len(moves)-1-i] = m
	}
	if len(moves) > 0 {
		h.seq = moves[0].Seq
	}
	return h, nil
}

// claimWait is how long a writer that lost the claim of a move's seq waits
// for that move to be readable before it decides again: the winner writes
// it right after its claim, and deciding without it would base the next
// move on an old state. A winner that died leaves the seq unused: after
// claimWait the writer goes on past it.
const claimWait = 5 * time.Second

// move makes one move of an alias of name, as decide says on the history
// as it is: it claims the seq after the newest it read, so that no other
// move came in between; if another writer got that seq first, it reads the
// history again and decides again. decide's error (errNoMove: nothing to
// do) is returned as it is, with no move.
func (r *Registry) move(ctx context.Context, name, actor, reason string, decide func(h *aliasHistory) (step, error)) error {
	var tried uint64
	for range maxClaims {
		h, err := r.history(ctx, name)
		if err != nil {
			return err
		}
		if h.seq < tried { // the winner of tried has not written its move yet
			deadline := time.Now().Add(claimWait)
			for h.seq < tried && time.Now().Before(deadline) {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(20 * time.Millisecond):
				}
				if h, err = r.history(ctx, name); err != nil {
					return err
				}
			}
		}
		s, err := decide(h)
		if err != nil {
			return err
		}
		seq := max(h.seq, tried) + 1
		ok, err := r.store.Claim(ctx, clickhouse.ClaimMove, name, seq)
		if err != nil {
			return fmt.Errorf("move %s of %s: %w", s.alias, name, err)
		}
		if !ok {
			tried = seq
			continue
		}
		prev := h.alias(s.alias)
		now := r.now().UTC()
		if err := r.store.InsertMove(ctx, clickhouse.AliasMove{Name: name, Alias: s.alias, Version: s.version, PreviousVersion: prev,
			Time: now, Seq: seq, Actor: actor, Reason: reason, Restores: s.restores}); err != nil {
			return err
		}
		if err := r.store.Release(ctx, clickhouse.ClaimMove, name, seq); err != nil {
			r.log.Warn("registry claim left behind (harmless: the seq stays taken)", "model", name, "seq", seq, "err", err)
		}
		r.log.Info("alias moved", "model", name, "alias", s.alias, "version", s.version, "previous", prev, "seq", seq, "actor", actor, "reason", reason)
		r.publish(ctx, flywheel.ModelEvent{Type: s.typ, Model: name, Alias: s.alias, Version: s.version, PreviousVersion: prev, Actor: actor, Reason: reason})
		return nil
	}
	return flywheel.Errorf(flywheel.ECONFLICT, "move of %s: %d seqs in a row were taken by other writers", name, maxClaims)
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
			Time: m.Time, Seq: m.Seq, Actor: m.Actor, Reason: m.Reason})
	}
	return out, err
}

// Bootstrap gives a model with no champion its first version: a fresh model
// of the configured shape, which for a ranker is the uniformly random policy
// the loop starts from. Several processes may bootstrap at once: one of them
// stores version 1 and makes it the champion, the others find it.
func (r *Registry) Bootstrap(ctx context.Context, name string, mc flywheel.ModelConfig) error {
	cur, err := r.Alias(ctx, name, Champion)
	if err != nil || cur != 0 {
		return err
	}
	first, err := r.bootstrapVersion(ctx, name, mc)
	if err != nil {
		return err
	}
	err = r.move(ctx, name, "bootstrap", "first version: a fresh model; a ranker's is uniformly random", func(h *aliasHistory) (step, error) {
		if h.alias(Champion) != 0 {
			return step{}, errNoMove // another process bootstrapped it
		}
		return step{typ: flywheel.EventPromoted, alias: Champion, version: first}, nil
	})
	if errors.Is(err, errNoMove) {
		return nil
	}
	return err
}

// bootstrapVersion returns the version a bootstrap promotes: version 1,
// stored by this process if no other has claimed it, else once the one that
// did has stored it (or, if that one died before, the next free version,
// stored by this process).
func (r *Registry) bootstrapVersion(ctx context.Context, name string, mc flywheel.ModelConfig) (int, error) {
	latest, err := r.Latest(ctx, name)
	if err != nil || latest > 0 {
		return 1, err
	}
	m, err := model.FromConfig(mc)
	if err != nil {
		return 0, fmt.Errorf("bootstrap %s: %w", name, err)
	}
	art, err := m.MarshalBinary()
	if err != nil {
		return 0, fmt.Errorf("bootstrap %s: %w", name, err)
	}
	manifest := map[string]any{"bootstrap": true, "policy": "uniform random (all weights zero)"}
	write := func(v int) error { return r.insert(ctx, name, v, mc.Kind, art, manifest, map[string]any{}) }
	ok, err := r.store.Claim(ctx, clickhouse.ClaimVersion, name, 1)
	if err != nil {
		return 0, fmt.Errorf("bootstrap %s: %w", name, err)
	}
	if ok {
		if err := write(1); err != nil {
			return 0, err
		}
		if err := r.store.Release(ctx, clickhouse.ClaimVersion, name, 1); err != nil {
			r.log.Warn("registry claim left behind (harmless: the version stays taken)", "model", name, "version", 1, "err", err)
		}
		return 1, nil
	}
	deadline := time.Now().Add(claimWait)
	for time.Now().Before(deadline) {
		if latest, err := r.Latest(ctx, name); err != nil || latest > 0 {
			return 1, err
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return r.allocate(ctx, name, 1, write)
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
