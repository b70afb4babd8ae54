package retrain

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

// Reproduction is the outcome of retraining a version from its manifest.
type Reproduction struct {
	Model          string `json:"model"`
	Version        int    `json:"version"`
	Rows           int    `json:"rows"`
	Identical      bool   `json:"identical"`
	DifferentCount int    `json:"different_weights"`
	// Training is how the version was trained (full or incremental) and
	// Parent the version an incremental one was rebuilt from.
	Training string `json:"training,omitempty"`
	Parent   int    `json:"parent,omitempty"`
	Took     string `json:"took"`
}

// Reproduce retrains version of name from what its manifest records (the
// data window and holdout cut, the configuration, and how it started: from
// zero for a full version; from the parent's stored artifact, weights and
// optimizer state, for an incremental one; from the warm-start version's
// weights for a version trained before incremental training) and compares
// the result with the registered artifact: every weight, and for an artifact
// with optimizer state every byte. An incremental version is rebuilt from its
// parent's artifact as registered (checked against the sha256 its manifest
// recorded), not from the whole chain: reproduce the parent to check the
// link before it. It returns an error if the version has no manifest, if the
// parent's artifact is not the one it started from, or if the data in the
// window is no longer what it was trained on (rows or their fingerprint
// differ).
func (r *Retrainer) Reproduce(ctx context.Context, name string, version int) (*Reproduction, error) {
	start := time.Now()
	v, err := r.registry.Get(ctx, name, version)
	if err != nil {
		return nil, err
	}
	var man Manifest
	if err := json.Unmarshal(v.Manifest, &man); err != nil || man.TrainRows == 0 {
		return nil, flywheel.Errorf(flywheel.EINVALID, "%s v%d has no training manifest to reproduce (a bootstrap version?)", name, version)
	}
	if man.DataSHA256 == "" {
		return nil, flywheel.Errorf(flywheel.EINVALID, "%s v%d was trained by a build that did not fingerprint its data; it cannot be checked", name, version)
	}
	tr, err := r.restartTrainer(ctx, name, version, man, v.Artifact)
	if err != nil {
		return nil, err
	}
	win := window{fromMs: man.DataFromMs, toMs: man.DataToMs, holdFrom: man.HoldoutFrom,
		progressive: man.Evidence == flywheel.EvidenceProgressive, evidenceFrom: man.EvidenceFromMs}
	tr, got, err := r.trainOn(ctx, name, man.Config, tr, win, nil)
	if err != nil {
		return nil, err
	}
	if got.rows != man.Rows || got.hash != man.DataSHA256 {
		return nil, flywheel.Errorf(flywheel.ECONFLICT, "the data of %s v%d's window changed: %d rows now, %d then (late events ingested, or data deleted)", name, version, got.rows, man.Rows)
	}
	orig, err := model.Decode(v.Artifact)
	if err != nil {
		return nil, err
	}
	diff := differentWeights(tr.Model().Weights(), orig.Weights())
	identical := diff == 0
	if model.HasOptimizerState(v.Artifact) { // the optimizer state and the count learned too
		art, err := tr.MarshalBinary()
		if err != nil {
			return nil, err
		}
		identical = identical && bytes.Equal(art, v.Artifact)
	}
	return &Reproduction{Model: name, Version: version, Rows: got.rows, Identical: identical, DifferentCount: diff,
		Training: man.Training, Parent: man.Parent, Took: time.Since(start).Round(time.Millisecond).String()}, nil
}

// restartTrainer returns the trainer version of name started as its
// manifest man records, artifact being the version's: from the parent's
// artifact for an incremental version, from the warm-start version's
// weights for one trained before incremental training, else from zero. It
// returns an error if a version it starts from cannot be read or decoded,
// or (ECONFLICT) if the parent's artifact is not the one recorded.
func (r *Retrainer) restartTrainer(ctx context.Context, name string, version int, man Manifest, artifact []byte) (*model.Trainer, error) {
	// The name dictionary is rebuilt with the bound the version was trained
	// with, and not at all for a version trained before names were kept.
	tc := trainConfig(man.Config)
	tc.Names = model.NameLimit(artifact)
	switch {
	case man.Training == TrainedIncremental:
		pv, err := r.registry.Get(ctx, name, man.Parent)
		if err != nil {
			return nil, fmt.Errorf("parent v%d of %s v%d: %w", man.Parent, name, version, err)
		}
		if sum := sha256.Sum256(pv.Artifact); hex.EncodeToString(sum[:]) != man.ParentSHA256 {
			return nil, flywheel.Errorf(flywheel.ECONFLICT, "the artifact of %s v%d is not the one v%d went on from (sha256 %s, recorded %s)", name, man.Parent, version, hex.EncodeToString(sum[:]), man.ParentSHA256)
		}
		tr, err := model.Resume(pv.Artifact, shapeOf(man.Config), tc)
		if err != nil {
			return nil, fmt.Errorf("resume from parent v%d of %s v%d: %w", man.Parent, name, version, err)
		}
		return tr, nil
	case man.WarmStartFrom > 0: // before incremental training: the weights only, fresh AdaGrad
		wv, err := r.registry.Get(ctx, name, man.WarmStartFrom)
		if err != nil {
			return nil, err
		}
		warm, err := model.Decode(wv.Artifact)
		if err != nil {
			return nil, err
		}
		if man.Config.Kind != flywheel.KindRanker {
			warm, err = model.FromConfig(man.Config)
			if err != nil {
				return nil, err
			}
		}
		return model.NewTrainer(warm, tc), nil
	default:
		m, err := model.FromConfig(man.Config)
		if err != nil {
			return nil, err
		}
		return model.NewTrainer(m, tc), nil
	}
}

// differentWeights returns how many of the weights a and b differ, bit for
// bit; all of the longer's when their lengths differ.
func differentWeights(a, b []float32) int {
	if len(a) != len(b) {
		return max(len(a), len(b))
	}
	diff := 0
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			diff++
		}
	}
	return diff
}

// Report is the offline evaluation of a version against the champion.
type Report struct {
	Model      string     `json:"model"`
	Version    int        `json:"version"`
	Champion   int        `json:"champion"`
	FromMs     uint64     `json:"from_ms"`
	ToMs       uint64     `json:"to_ms"`
	Examples   int        `json:"examples"`
	Estimator  string     `json:"estimator,omitempty"`
	Comparison Comparison `json:"comparison"`
	// Classification is set for classifiers (and Comparison left empty).
	Classification *ClassifierComparison `json:"classification,omitempty"`
}

// Evaluate judges version of name against the current champion on the closed
// examples logged in [from, to], with every estimator. The doubly robust
// estimator's reward model is the evaluated version.
func (r *Retrainer) Evaluate(ctx context.Context, name string, version int, from, to time.Time) (*Report, error) {
	mc, ok := r.models[name]
	if !ok {
		return nil, flywheel.Errorf(flywheel.ENOTFOUND, "model %q is not configured", name)
	}
	v, err := r.registry.Get(ctx, name, version)
	if err != nil {
		return nil, err
	}
	cand, err := model.Decode(v.Artifact)
	if err != nil {
		return nil, err
	}
	champV, champArt, err := r.registry.Champion(ctx, name)
	if err != nil {
		return nil, err
	}
	champ, err := model.Decode(champArt)
	if err != nil {
		return nil, err
	}
	rep := &Report{Model: name, Version: version, Champion: champV, FromMs: uint64(from.UnixMilli()), ToMs: uint64(to.UnixMilli())}
	fromMs, toMs := uint64(from.UnixMilli()), uint64(to.UnixMilli())
	if mc.Kind == flywheel.KindClassifier {
		j := newClassJudge(cand, champ, mc.Promote.Confidence)
		if err := r.scanClassified(ctx, name, fromMs, toMs, j.add); err != nil {
			return nil, err
		}
		cc := j.result()
		rep.Examples, rep.Classification = int(j.n), &cc
	} else {
		c := newComparer(cand, champ, cand, mc.Promote.Confidence)
		if err := r.scan(ctx, name, fromMs, toMs, c.add); err != nil {
			return nil, err
		}
		rep.Examples, rep.Estimator, rep.Comparison = int(c.n), mc.Promote.Estimator, c.result()
	}
	if rep.Examples == 0 {
		return nil, flywheel.Errorf(flywheel.ENOTFOUND, "no closed examples of %s between %s and %s", name, from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	return rep, nil
}

// String renders the report for a person.
func (rep *Report) String() string {
	if cc := rep.Classification; cc != nil {
		row := func(v int, e ClassifierEval) string {
			return fmt.Sprintf("  v%-12d %.4f [%.4f, %.4f]   %.4f   %.4f   %.4f / %.4f\n", v, e.LogLoss.Value, e.LogLoss.Lower, e.LogLoss.Upper, e.AUC, e.ECE, e.MeanPredicted, e.PositiveRate)
		}
		return fmt.Sprintf("%s v%d against champion v%d on %d closed examples from %s to %s\n  model         log loss [95%% interval]       AUC      ECE      mean predicted / positive rate\n",
			rep.Model, rep.Version, rep.Champion, rep.Examples,
			time.UnixMilli(int64(rep.FromMs)).UTC().Format(time.RFC3339), time.UnixMilli(int64(rep.ToMs)).UTC().Format(time.RFC3339)) +
			row(rep.Version, cc.Candidate) + row(rep.Champion, cc.Champion) +
			fmt.Sprintf("  log loss difference (paired): %.4f [%.4f, %.4f]\n", cc.LogLossDiff.Value, cc.LogLossDiff.Lower, cc.LogLossDiff.Upper)
	}
	est := func(e Estimate) string { return fmt.Sprintf("%.4f [%.4f, %.4f]", e.Value, e.Lower, e.Upper) }
	c := rep.Comparison
	return fmt.Sprintf(`%s v%d against champion v%d on %d closed examples from %s to %s
  policy        IPS                        SNIPS                      DR                         ESS
  v%-12d %-26s %-26s %-26s %.0f
  v%-12d %-26s %-26s %-26s %.0f
  paired difference        %-26s %-26s %-26s
  promotion looks at %s
`, rep.Model, rep.Version, rep.Champion, rep.Examples,
		time.UnixMilli(int64(rep.FromMs)).UTC().Format(time.RFC3339), time.UnixMilli(int64(rep.ToMs)).UTC().Format(time.RFC3339),
		rep.Version, est(c.Candidate.IPS), est(c.Candidate.SNIPS), est(c.Candidate.DR), c.Candidate.ESS,
		rep.Champion, est(c.Champion.IPS), est(c.Champion.SNIPS), est(c.Champion.DR), c.Champion.ESS,
		est(c.Diff), est(c.DiffSNIPS), est(c.DiffDR), rep.Estimator) +
		c.SlotsTable(rep.Estimator, rep.Version, rep.Champion)
}
