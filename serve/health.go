package serve

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/deploy"
	"github.com/flywheel-dev/flywheel/model"
)

// Feature health: live traffic compared with the champion's training
// window, feature by feature (the feature profile retraining keeps in the
// manifest, model.FeatureProfile). One request in healthSampleEvery of each
// model is profiled, under a lock, without allocating (but for the first
// sight of a feature training did not have, at most maxNewFeatures of them),
// into two half-window buckets: the figures cover the last healthWindow/2 to
// healthWindow.
const (
	healthSampleEvery = 4
	healthWindow      = 10 * time.Minute
	maxNewFeatures    = 32
	// A feature is reported missing when training carried it in at least
	// missingTrainingShare of its examples and live traffic, over at least
	// missingMinDecisions sampled decisions, in less than half that share.
	missingTrainingShare = 0.05
	missingMinDecisions  = 20
)

// profileSource is implemented by a Registry that keeps the feature profile
// of each version (*deploy.Registry): without one, live figures are not
// compared with training.
type profileSource interface {
	FeatureProfile(ctx context.Context, name string, version int) (*model.FeatureProfile, error)
}

var _ profileSource = (*deploy.Registry)(nil)

// featureHealth is the live profile of one model while one champion
// version serves, compared with that version's training profile. It is
// safe for concurrent use.
type featureHealth struct {
	version int
	train   *model.FeatureProfile // nil: the version has none
	offered atomic.Uint64         // requests offered, for sampling

	mu           sync.Mutex
	epoch        int64 // the current half window
	decisions    [2]uint64
	stamp        uint64 // the sampled decision being recorded
	byNS         map[string]map[string]*liveFeature
	feats        []*liveFeature // training's, in its order, then new ones
	added        int            // features added live, not in training
	newTruncated bool
}

// liveFeature is one feature's live counts, in two half-window buckets.
type liveFeature struct {
	ns, name string
	train    *model.ProfiledFeature // nil: not in training
	values   map[string]struct{}    // training's values
	compared bool                   // there is a training profile to compare with
	check    bool                   // values can be checked: training kept them all
	stamp    uint64
	c        [2]liveCounts
}

type liveCounts struct {
	present                  uint64
	strings, checked, unseen uint64
	numbers, outOfRange      uint64
	min, max                 float64
}

func newFeatureHealth(version int, train *model.FeatureProfile, now time.Time) *featureHealth {
	fh := &featureHealth{version: version, train: train, epoch: halfWindow(now), byNS: map[string]map[string]*liveFeature{}}
	if train == nil {
		return fh
	}
	for i := range train.Features {
		f := &train.Features[i]
		lf := &liveFeature{ns: f.Namespace, name: f.Name, train: f, compared: true, check: !f.ValuesTruncated, values: make(map[string]struct{}, len(f.Values))}
		for _, v := range f.Values {
			lf.values[v] = struct{}{}
		}
		fh.insert(lf)
	}
	return fh
}

// carry takes over prev's live presence counts (decisions sampled, and
// per feature how many carried it): the features a product sends do not
// change with the version that serves, so a swap must not blank the
// figures an alert reads. What is judged against training (values never
// seen, numbers out of range, the live range) starts again, against this
// version's training profile.
func (fh *featureHealth) carry(prev *featureHealth, now time.Time) {
	prev.mu.Lock()
	defer prev.mu.Unlock()
	prev.advance(now)
	fh.epoch, fh.decisions = prev.epoch, prev.decisions
	for _, old := range prev.feats {
		lf := fh.byNS[old.ns][old.name]
		if lf == nil {
			if lf = fh.addNew(old.ns, old.name); lf == nil {
				continue
			}
		}
		for k := range lf.c {
			lf.c[k].present = old.c[k].present
		}
	}
}

func halfWindow(t time.Time) int64 { return t.UnixNano() / int64(healthWindow/2) }

func (fh *featureHealth) insert(lf *liveFeature) {
	byName := fh.byNS[lf.ns]
	if byName == nil {
		byName = map[string]*liveFeature{}
		fh.byNS[lf.ns] = byName
	}
	byName[lf.name] = lf
	fh.feats = append(fh.feats, lf)
}

// observe profiles one request in healthSampleEvery: its context and every
// action's features (a prediction's features as its context).
func (fh *featureHealth) observe(now time.Time, ctx flywheel.Features, actions []flywheel.Action) {
	if fh.sampled() {
		fh.record1(now, ctx, actions)
	}
}

// sampled counts one request offered and reports whether the profile
// samples it.
func (fh *featureHealth) sampled() bool { return (fh.offered.Add(1)-1)%healthSampleEvery == 0 }

// record1 records one sampled request.
func (fh *featureHealth) record1(now time.Time, ctx flywheel.Features, actions []flywheel.Action) {
	fh.mu.Lock()
	defer fh.mu.Unlock()
	slot := fh.advance(now)
	fh.decisions[slot]++
	fh.stamp++
	fh.record(slot, ctx)
	for i := range actions {
		fh.record(slot, actions[i].Features)
	}
}

// advance moves the buckets to now's half window, emptying those that fell
// out of the window, and returns now's bucket. A clock that went back keeps
// the current one. The caller holds mu.
func (fh *featureHealth) advance(now time.Time) int {
	e := halfWindow(now)
	if e > fh.epoch {
		for k := fh.epoch + 1; k <= min(e, fh.epoch+2); k++ {
			fh.decisions[k%2] = 0
			for _, lf := range fh.feats {
				lf.c[k%2] = liveCounts{}
			}
		}
		fh.epoch = e
	}
	return int(fh.epoch % 2)
}

func (fh *featureHealth) record(slot int, f flywheel.Features) {
	for ns, feats := range f {
		for name, v := range feats {
			lf := fh.byNS[ns][name]
			if lf == nil {
				if lf = fh.addNew(ns, name); lf == nil {
					continue
				}
			}
			c := &lf.c[slot]
			if lf.stamp != fh.stamp {
				lf.stamp = fh.stamp
				c.present++
			}
			switch v := v.(type) {
			case string:
				lf.value(c, v)
			case float64:
				lf.number(c, v)
			case []any:
				for _, e := range v {
					if s, ok := e.(string); ok {
						lf.value(c, s)
					}
				}
			}
		}
	}
}

// recordListed is record for a listed set (a request read into a
// FeatureList): the same counts.
func (fh *featureHealth) recordListed(slot int, set []flywheel.ListedFeature) {
	for _, f := range set {
		lf := fh.byNS[f.NS][f.Name]
		if lf == nil {
			// the names share the request's bytes: the profile keeps copies
			if lf = fh.addNew(strings.Clone(f.NS), strings.Clone(f.Name)); lf == nil {
				continue
			}
		}
		c := &lf.c[slot]
		if lf.stamp != fh.stamp {
			lf.stamp = fh.stamp
			c.present++
		}
		switch f.Kind {
		case flywheel.ListedString, flywheel.ListedMember:
			lf.value(c, f.Str)
		case flywheel.ListedNumber:
			lf.number(c, f.Num)
		}
	}
}

// addNew adds a feature training did not have, while fewer than
// maxNewFeatures were added; nil after.
func (fh *featureHealth) addNew(ns, name string) *liveFeature {
	if fh.added >= maxNewFeatures {
		fh.newTruncated = true
		return nil
	}
	fh.added++
	lf := &liveFeature{ns: ns, name: name, compared: fh.train != nil, check: fh.train != nil}
	fh.insert(lf)
	return lf
}

// value counts a categorical value, and whether training saw it (a value
// training could not keep is not checked).
func (lf *liveFeature) value(c *liveCounts, s string) {
	c.strings++
	if !lf.check || len(s) > model.ProfileValueBytes {
		return
	}
	c.checked++
	if _, ok := lf.values[s]; !ok {
		c.unseen++
	}
}

// number counts a numeric value, and whether it is outside training's
// range (any number is, for a feature training never saw a number of).
func (lf *liveFeature) number(c *liveCounts, v float64) {
	if c.numbers == 0 || v < c.min {
		c.min = v
	}
	if c.numbers == 0 || v > c.max {
		c.max = v
	}
	c.numbers++
	if !lf.compared {
		return
	}
	if lf.train == nil || lf.train.Range == nil || v < lf.train.Range.Min || v > lf.train.Range.Max {
		c.outOfRange++
	}
}

// featureReport is GET /v1/models/{name}/features.
type featureReport struct {
	Model       string `json:"model"`
	Version     int    `json:"version"`
	Window      string `json:"window"`
	SampleEvery int    `json:"sample_every"`
	Decisions   uint64 `json:"decisions_sampled"`
	// Training is nil for a version trained without a profile.
	Training             *trainingSummary `json:"training"`
	NewFeaturesTruncated bool             `json:"new_features_truncated,omitempty"`
	Features             []featureRow     `json:"features"`
}

type trainingSummary struct {
	Examples          uint64 `json:"examples"`
	FeaturesTruncated bool   `json:"features_truncated,omitempty"`
}

// featureRow is one feature's live figures beside training's. Ratios are
// nil when there is nothing to divide by.
type featureRow struct {
	Feature          string   `json:"feature"`
	InTraining       bool     `json:"in_training"`
	Presence         *float64 `json:"presence"`
	TrainingPresence *float64 `json:"training_presence,omitempty"`
	// Missing: present in training, mostly absent now (missing* above).
	Missing bool `json:"missing"`
	// New: sent now, absent from a training profile that has every
	// feature.
	New                     bool                `json:"new"`
	Values                  uint64              `json:"values"`
	UnseenValues            uint64              `json:"unseen_values"`
	UnseenRatio             *float64            `json:"unseen_value_ratio,omitempty"`
	TrainingValues          int                 `json:"training_values"`
	TrainingValuesTruncated bool                `json:"training_values_truncated,omitempty"`
	Numbers                 uint64              `json:"numbers"`
	OutOfRange              uint64              `json:"out_of_range"`
	OutOfRangeRatio         *float64            `json:"out_of_range_ratio,omitempty"`
	Min                     *float64            `json:"min,omitempty"`
	Max                     *float64            `json:"max,omitempty"`
	TrainingRange           *model.NumericRange `json:"training_range,omitempty"`
}

func ratio(n, d uint64) *float64 {
	if d == 0 {
		return nil
	}
	r := float64(n) / float64(d)
	return &r
}

// report returns the figures of the window ending now.
func (fh *featureHealth) report(name string, now time.Time) featureReport {
	fh.mu.Lock()
	defer fh.mu.Unlock()
	fh.advance(now)
	out := featureReport{Model: name, Version: fh.version, Window: windowName(healthWindow), SampleEvery: healthSampleEvery,
		Decisions: fh.decisions[0] + fh.decisions[1], NewFeaturesTruncated: fh.newTruncated, Features: make([]featureRow, 0, len(fh.feats))}
	if fh.train != nil {
		out.Training = &trainingSummary{Examples: fh.train.Examples, FeaturesTruncated: fh.train.FeaturesTruncated}
	}
	for _, lf := range fh.feats {
		out.Features = append(out.Features, fh.row(lf, out.Decisions))
	}
	return out
}

func (fh *featureHealth) row(lf *liveFeature, decisions uint64) featureRow {
	c := lf.c[0].plus(lf.c[1])
	r := featureRow{Feature: lf.ns + "^" + lf.name, InTraining: lf.train != nil, Presence: ratio(c.present, decisions),
		Values: c.strings, UnseenValues: c.unseen, UnseenRatio: ratio(c.unseen, c.checked),
		Numbers: c.numbers, OutOfRange: c.outOfRange, New: lf.train == nil && lf.compared && !fh.train.FeaturesTruncated}
	if c.numbers > 0 {
		r.Min, r.Max = &c.min, &c.max
	}
	if !lf.compared {
		return r
	}
	r.OutOfRangeRatio = ratio(c.outOfRange, c.numbers)
	tp := 0.0
	if lf.train != nil {
		tp = fh.train.Presence(lf.train)
		r.TrainingValues, r.TrainingValuesTruncated, r.TrainingRange = len(lf.train.Values), lf.train.ValuesTruncated, lf.train.Range
	}
	r.TrainingPresence = &tp
	r.Missing = lf.train != nil && tp >= missingTrainingShare && decisions >= missingMinDecisions && *r.Presence < tp/2
	return r
}

// plus returns the counts of both buckets.
func (a liveCounts) plus(b liveCounts) liveCounts {
	out := liveCounts{present: a.present + b.present, strings: a.strings + b.strings, checked: a.checked + b.checked,
		unseen: a.unseen + b.unseen, numbers: a.numbers + b.numbers, outOfRange: a.outOfRange + b.outOfRange, min: a.min, max: a.max}
	if a.numbers == 0 || (b.numbers > 0 && b.min < a.min) {
		out.min = b.min
	}
	if a.numbers == 0 || (b.numbers > 0 && b.max > a.max) {
		out.max = b.max
	}
	return out
}

// observeFeatures profiles a request to h's champion, once it has one.
func (s *Server) observeFeatures(h *holder, ctx flywheel.Features, actions []flywheel.Action) {
	if fh := h.health.Load(); fh != nil {
		fh.observe(s.now(), ctx, actions)
	}
}

// observeListed is observeFeatures for a request read into a FeatureList.
func (s *Server) observeListed(h *holder, req *rankRequest) {
	fh := h.health.Load()
	if fh == nil || !fh.sampled() {
		return
	}
	fh.mu.Lock()
	defer fh.mu.Unlock()
	slot := fh.advance(s.now())
	fh.decisions[slot]++
	fh.stamp++ // presence counts once per request
	for i := range req.list.Sets {
		fh.recordListed(slot, req.list.Set(i))
	}
}

// newHealth returns the live profile of version v of h, with the
// version's training profile when the registry keeps one, carrying the
// presence counts of the version it replaces. A profile that cannot be
// read is logged: serving goes on, compared with nothing.
func (s *Server) newHealth(ctx context.Context, h *holder, v int) *featureHealth {
	var train *model.FeatureProfile
	if ps, ok := s.registry.(profileSource); ok {
		p, err := ps.FeatureProfile(ctx, h.name, v)
		if err != nil {
			s.log.Warn("the champion's feature profile could not be read; feature health is shown without training's", "model", h.name, "version", v, "err", err)
		}
		train = p
	}
	fh := newFeatureHealth(v, train, s.now())
	if prev := h.health.Load(); prev != nil {
		fh.carry(prev, s.now())
	}
	return fh
}

func (s *Server) handleFeatures(c *gin.Context) error {
	h, ok := s.models[c.Param("name")]
	if !ok {
		return flywheel.Errorf(flywheel.ENOTFOUND, "model %q is not configured", c.Param("name"))
	}
	fh := h.health.Load()
	if fh == nil {
		return flywheel.Errorf(flywheel.EUNAVAILABLE, "model %q is not loaded yet", h.name)
	}
	c.JSON(http.StatusOK, fh.report(h.name, s.now()))
	return nil
}

// healthCollector exports every model's feature health at scrape time:
// labels are bounded by the training profile's features and
// maxNewFeatures.
type healthCollector struct {
	models                                  map[string]*holder
	now                                     func() time.Time
	presence, training, unseen, out, decide *prometheus.Desc
}

func newHealthCollector(models map[string]*holder, now func() time.Time) *healthCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &healthCollector{models: models, now: now,
		presence: desc("flywheel_feature_presence_ratio", "Share of the sampled decisions of the last 5 to 10 minutes that carry the feature (context or any action).", "model", "feature"),
		training: desc("flywheel_feature_presence_training_ratio", "Share of the champion's training examples that carried the feature (0: a feature training did not have).", "model", "feature"),
		unseen:   desc("flywheel_feature_unseen_value_ratio", "Share of the feature's live categorical values that the champion's training window never saw.", "model", "feature"),
		out:      desc("flywheel_feature_out_of_range_ratio", "Share of the feature's live numbers outside the champion's training range.", "model", "feature"),
		decide:   desc("flywheel_feature_decisions_sampled", fmt.Sprintf("Decisions profiled for feature health in the last 5 to 10 minutes (one request in %d).", healthSampleEvery), "model"),
	}
}

func (hc *healthCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{hc.presence, hc.training, hc.unseen, hc.out, hc.decide} {
		ch <- d
	}
}

func (hc *healthCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v *float64, labels ...string) {
		if v != nil {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, *v, labels...)
		}
	}
	for name, h := range hc.models {
		fh := h.health.Load()
		if fh == nil {
			continue
		}
		r := fh.report(name, hc.now())
		n := float64(r.Decisions)
		gauge(hc.decide, &n, name)
		for _, f := range r.Features {
			gauge(hc.presence, f.Presence, name, f.Feature)
			gauge(hc.training, f.TrainingPresence, name, f.Feature)
			gauge(hc.unseen, f.UnseenRatio, name, f.Feature)
			gauge(hc.out, f.OutOfRangeRatio, name, f.Feature)
		}
	}
}
