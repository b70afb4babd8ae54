package retrain

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

// Incremental training. With retrain.incremental on, a candidate goes on
// from the champion: its weights, its optimizer state (AdaGrad's, or a
// classifier's FTRL state) and its count of examples learned, all in the
// champion's artifact (format 3), and it learns only the closed examples at
// or after the champion's cutoff (the first time the champion did not learn
// from), up to the holdout. The holdout is chosen as for a full retrain (the
// newest retrain.holdout share of the window, never before the champion's or
// its anchor's cutoff), so the candidate is judged on data neither model
// learned from, and the same evidence judges full and incremental
// candidates. Learning the examples after the cutoff from the champion's
// state gives, bit for bit, the model that one trainer would have learned
// from the whole chain's examples in order.
//
// A full retrain (from zero over the window) is forced, with the reason in
// the manifest, when the champion cannot be continued: it learned nothing
// (a bootstrap version), its artifact carries no optimizer state (written
// before format 3), its shape (kind, bits, interactions) or its learner
// (retrain.objective, retrain.learning_rate) is not the configured one, or
// retrain.full_every N says so: a chain is a full version followed by at
// most N-1 incremental ones, so every Nth version is full.

// How a version was trained, in its manifest's "training".
const (
	TrainedFull        = "full"
	TrainedIncremental = "incremental"
)

// Chain is how a version was trained and what it continued, recorded in its
// manifest.
type Chain struct {
	Training string `json:"training"` // TrainedFull or TrainedIncremental
	// FullReason says why a full version is full.
	FullReason string `json:"full_reason,omitempty"`
	// Parent is the version an incremental one went on from, and
	// ParentSHA256 the sha256 of its artifact (retrain --reproduce starts
	// from that artifact and checks it is the same).
	Parent       int    `json:"parent,omitempty"`
	ParentSHA256 string `json:"parent_sha256,omitempty"`
	// ParentCutoffMs is the parent's cutoff: this version learned the
	// examples at or after it (and before HoldoutFrom).
	ParentCutoffMs uint64 `json:"parent_cutoff_ms,omitempty"`
	// CutoffMs is this version's cutoff: the first time (Unix ms) it did
	// not learn from. Its successor learns from there.
	CutoffMs uint64 `json:"cutoff_ms,omitempty"`
	// Link counts the incremental versions since the chain's full one: 0
	// for a full version, the parent's + 1 for an incremental one.
	Link int `json:"link"`
	// Learned is the count of examples learned over the whole chain, every
	// pass counted (the artifact's): what SquareCB's γ grows with.
	Learned uint64 `json:"learned"`
	// parentProfile is the parent's feature profile, which an incremental
	// version's extends (not recorded: the manifest has the merge).
	parentProfile *model.FeatureProfile
}

// IncrementalOn says whether rc asks for incremental training
// (retrain.incremental, or its older name retrain.warm_start).
func IncrementalOn(rc flywheel.RetrainConfig) bool { return rc.Incremental || rc.WarmStart }

// trainConfig is how retraining learns mc: with a dictionary of the
// readable names behind the hashed features (model.DefaultNames of them),
// stored in the artifact for `flywheel models explain`.
func trainConfig(mc flywheel.ModelConfig) model.TrainConfig {
	return model.TrainConfig{LearningRate: mc.Retrain.LearningRate, Objective: mc.Retrain.Objective, PriorSteps: mc.Retrain.Prior(), Names: model.DefaultNames}
}

func shapeOf(mc flywheel.ModelConfig) model.Config {
	return model.Shape(mc)
}

// fresh returns a trainer of mc's shape from zero.
func fresh(mc flywheel.ModelConfig) (*model.Trainer, error) {
	m, err := model.FromConfig(mc)
	if err != nil {
		return nil, err
	}
	return model.NewTrainer(m, trainConfig(mc)), nil
}

// startFrom returns the trainer a candidate of name starts from and the
// chain it will belong to: incremental from champion champV when mc asks
// for it and the champion can be continued, otherwise full, from zero, with
// the reason.
func (r *Retrainer) startFrom(ctx context.Context, name string, mc flywheel.ModelConfig, champV int) (*model.Trainer, Chain, error) {
	full := func(reason string) (*model.Trainer, Chain, error) {
		tr, err := fresh(mc)
		return tr, Chain{Training: TrainedFull, FullReason: reason}, err
	}
	if !IncrementalOn(mc.Retrain) {
		return full("retrain.incremental is off")
	}
	v, err := r.registry.Get(ctx, name, champV)
	if err != nil {
		return nil, Chain{}, fmt.Errorf("champion %s v%d: %w", name, champV, err)
	}
	var man Manifest
	if v == nil || json.Unmarshal(v.Manifest, &man) != nil || man.TrainRows == 0 {
		return full(fmt.Sprintf("champion v%d learned nothing (a bootstrap version)", champV))
	}
	if n := mc.Retrain.FullEvery; n > 0 && man.Link+1 >= n {
		return full(fmt.Sprintf("retrain.full_every %d: champion v%d is version %d of its chain", n, champV, man.Link+1))
	}
	if got, want := man.Config.Retrain.Objective, mc.Retrain.Objective; got != want {
		return full(fmt.Sprintf("retrain.objective changed: champion v%d learned by %s, configured %s", champV, got, want))
	}
	if got, want := man.Config.Retrain.LearningRate, mc.Retrain.LearningRate; got != want {
		return full(fmt.Sprintf("retrain.learning_rate changed: champion v%d learned at %v, configured %v", champV, got, want))
	}
	if got, want := man.Config.Retrain.Prior(), mc.Retrain.Prior(); got != want {
		return full(fmt.Sprintf("retrain.prior_steps changed: champion v%d learned with %v, configured %v", champV, got, want))
	}
	tr, err := model.Resume(v.Artifact, shapeOf(mc), trainConfig(mc))
	switch {
	case errors.Is(err, model.ErrShape):
		return full(fmt.Sprintf("the shape changed: champion v%d: %v", champV, err))
	case errors.Is(err, model.ErrNoState):
		return full(fmt.Sprintf("champion v%d's artifact carries no optimizer state (written before incremental training)", champV))
	case err != nil:
		return nil, Chain{}, fmt.Errorf("resume from champion %s v%d: %w", name, champV, err)
	}
	sum := sha256.Sum256(v.Artifact)
	return tr, Chain{Training: TrainedIncremental, Parent: champV, ParentSHA256: hex.EncodeToString(sum[:]),
		ParentCutoffMs: trainedBefore(v.Manifest), Link: man.Link + 1, parentProfile: man.FeatureProfile}, nil
}
