package clickhouse

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flywheel-dev/flywheel"
)

// Point is one time bucket of one version and variant's closed decisions.
type Point struct {
	T          int64   `json:"t"` // bucket start, Unix ms
	Decisions  uint64  `json:"decisions"`
	RewardRate float64 `json:"reward_rate"`
}

// Series is the reward of one version and variant over time.
type Series struct {
	Version int     `json:"version"`
	Variant string  `json:"variant"`
	Points  []Point `json:"points"`
	// Totals over the whole window.
	Decisions  uint64  `json:"decisions"`
	RewardRate float64 `json:"reward_rate"`
	StdErr     float64 `json:"stderr"`
}

// Quality is one time bucket of how feedback and exploration went, over
// every version.
type Quality struct {
	T              int64   `json:"t"`
	Decisions      uint64  `json:"decisions"`
	JoinRate       float64 `json:"join_rate"`       // decisions with feedback inside the window
	DefaultedShare float64 `json:"defaulted_share"` // decisions whose reward is the default
	ExploredShare  float64 `json:"explored_share"`  // decisions that explored
}

// Reference is a reward rate to compare with (random, best known).
type Reference struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Source string  `json:"source"`
	At     int64   `json:"t"`
}

// Run is one stored retrain run.
type Run struct {
	StartedMs   int64           `json:"t"`
	TookMs      uint64          `json:"took_ms"`
	Outcome     string          `json:"outcome"`
	Reason      string          `json:"reason"`
	Version     int             `json:"version,omitempty"`
	Champion    int             `json:"champion"`
	TrainRows   uint64          `json:"train_rows"`
	HoldoutRows uint64          `json:"holdout_rows"`
	Comparison  json.RawMessage `json:"comparison,omitempty"`
}

// Flow is how fast events reach ClickHouse.
type Flow struct {
	DecisionsPerSecond float64 `json:"decisions_per_second"` // ingested over the last minute
	FeedbackPerSecond  float64 `json:"feedback_per_second"`
	NewestDecisionMs   int64   `json:"newest_decision_ms"` // when the newest ingested decision was made
	NewestAgeSeconds   float64 `json:"newest_age_seconds"`
}

// LateFeedback counts the feedback on a model's decisions received in the
// dashboard's window that came after its decision's reward window: Rescored
// of it within the decision's late window (reward.late_window), which
// re-scores its example; the rest counts in no reward.
type LateFeedback struct {
	Feedback  uint64  `json:"feedback"` // received in the window, on decisions of the model
	Late      uint64  `json:"late"`
	Rescored  uint64  `json:"rescored"`
	LateShare float64 `json:"late_share"` // Late / Feedback; 0 without feedback
}

// LiftPoint is the lift over the control group (promote.control) in one
// time bucket, or over the whole window: the reward rate of the decisions
// the live versions made (champion and canary, every version) minus the
// control group's, with its 95% interval (normal, unpooled variances).
type LiftPoint struct {
	T        int64   `json:"t"` // bucket start, Unix ms; the window's start for the total
	Treated  uint64  `json:"treated"`
	Control  uint64  `json:"control"`
	Lift     float64 `json:"lift"`
	Lower    float64 `json:"lower"`
	Upper    float64 `json:"upper"`
	Relative float64 `json:"relative"` // Lift / the control's rate; 0 when that is 0
}

// Lift is the lift over the control group over time and over the window:
// buckets where either side has fewer than two decisions are left out.
type Lift struct {
	Confidence float64     `json:"confidence"`
	Points     []LiftPoint `json:"points"`
	Total      *LiftPoint  `json:"total,omitempty"`
}

// SlotSeries is the reward of one slot of a model's pages (serve/slots.go:
// decisions EVENT_ID#SLOT) over time, every version together; the page's
// is the sum over its slots, by the bucket of its first slot.
type SlotSeries struct {
	Slot       string  `json:"slot"` // "" for the page
	Points     []Point `json:"points"`
	Decisions  uint64  `json:"decisions"` // pages for the page
	RewardRate float64 `json:"reward_rate"`
	StdErr     float64 `json:"stderr"`
}

// Overview is what the dashboard shows of one model, from ClickHouse.
type Overview struct {
	Model         string       `json:"model"`
	FromMs        int64        `json:"from"`
	ToMs          int64        `json:"to"`
	BucketSeconds int64        `json:"bucket_seconds"`
	Series        []Series     `json:"series"`
	Quality       []Quality    `json:"quality"`
	References    []Reference  `json:"references"`
	Runs          []Run        `json:"runs"`
	Flow          Flow         `json:"flow"`
	Late          LateFeedback `json:"late_feedback"`
	// Lift is absent without control decisions in the window.
	Lift *Lift `json:"lift,omitempty"`
	// Slots are absent without page decisions; the page is the last.
	Slots []SlotSeries `json:"slots,omitempty"`
	// ClosedThroughMs is when the window of the newest closed decision may
	// end (Unix ms): every example shown closed by then and is final.
	ClosedThroughMs uint64 `json:"closed_through"`
}

// bucketFor picks a bucket length that gives about 60 points over span.
func bucketFor(span time.Duration) time.Duration {
	for _, b := range []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second,
		time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour, 6 * time.Hour} {
		if span/b <= 90 {
			return b
		}
	}
	return 24 * time.Hour
}

// Insights reads the dashboard's figures of model over [now-window, now]
// from the analyst views, the retrain runs and the references.
func Insights(ctx context.Context, conn driver.Conn, db, model string, window time.Duration, now time.Time) (*Overview, error) {
	from, bucket, err := zoom(ctx, conn, db, model, window, now)
	if err != nil {
		return nil, err
	}
	o := &Overview{Model: model, FromMs: from.UnixMilli(), ToMs: now.UnixMilli(), BucketSeconds: int64(bucket / time.Second),
		Series: []Series{}, Quality: []Quality{}, References: []Reference{}, Runs: []Run{}}
	if o.ClosedThroughMs, err = closedThroughMs(ctx, conn, db); err != nil {
		return nil, err
	}
	slotted, err := o.rewards(ctx, conn, db, model, bucket)
	if err != nil {
		return nil, err
	}
	if slotted {
		if err := o.slots(ctx, conn, db, model, bucket); err != nil {
			return nil, err
		}
	}
	if o.References, err = References(ctx, conn, db, model); err != nil {
		return nil, err
	}
	if err := o.late(ctx, conn, db, model, uint64(o.FromMs)); err != nil {
		return nil, err
	}
	if err := o.runs(ctx, conn, db, model); err != nil {
		return nil, err
	}
	return o, o.flow(ctx, conn, db, model, now)
}

// zoom returns the start of the dashboard's window and its bucket: a window
// of a day over a model one hour old shows that hour, in buckets fit for an
// hour.
func zoom(ctx context.Context, conn driver.Conn, db, model string, window time.Duration, now time.Time) (time.Time, time.Duration, error) {
	from := now.Add(-window)
	var first uint64
	if err := conn.QueryRow(ctx, expand(sqlFirstDecision, db), model, uint64(from.UnixMilli())).Scan(&first); err != nil {
		return time.Time{}, 0, fmt.Errorf("first decision: %w", err)
	}
	if t := time.UnixMilli(int64(first)); first > 0 && t.After(from) {
		from = t
	}
	bucket := bucketFor(now.Sub(from))
	return from.Truncate(bucket), bucket, nil
}

// moments are a count, a sum and a sum of squares of rewards.
type moments struct{ n, sum, sum2 float64 }

func (m *moments) add(n, sum, sum2 float64) { m.n, m.sum, m.sum2 = m.n+n, m.sum+sum, m.sum2+sum2 }

func (m moments) mean() float64 { return m.sum / m.n }

// variance is the sample variance; 0 below two.
func (m moments) variance() float64 {
	if m.n < 2 {
		return 0
	}
	mean := m.mean()
	return math.Max(m.sum2-m.n*mean*mean, 0) / (m.n - 1)
}

// stderr is the standard error of the mean.
func (m moments) stderr() float64 {
	if m.n < 2 {
		return 0
	}
	return math.Sqrt(m.variance() / m.n)
}

// liftConfidence is the confidence of the dashboard's lift intervals.
const liftConfidence = 0.95

// liftOf is treated's mean minus control's, with its interval at
// liftConfidence; ok is false when either side has fewer than two.
func liftOf(t int64, treated, control moments) (LiftPoint, bool) {
	if treated.n < 2 || control.n < 2 {
		return LiftPoint{}, false
	}
	p := LiftPoint{T: t, Treated: uint64(treated.n), Control: uint64(control.n), Lift: treated.mean() - control.mean()}
	half := flywheel.TwoSidedZ(liftConfidence) * math.Sqrt(treated.variance()/treated.n+control.variance()/control.n)
	p.Lower, p.Upper = p.Lift-half, p.Lift+half
	if c := control.mean(); c != 0 {
		p.Relative = p.Lift / c
	}
	return p, true
}

// rewards reads, in one pass over the examples of the window, the reward
// series of every version and variant, the feedback and exploration shares
// and the lift over the control group; slotted tells whether the window
// holds page decisions.
func (o *Overview) rewards(ctx context.Context, conn driver.Conn, db, model string, bucket time.Duration) (slotted bool, err error) {
	bms := uint64(bucket / time.Millisecond)
	rows, err := conn.Query(ctx, expand(sqlRewardSeries, db), append([]any{bms, bms}, recentArgs(model, uint64(o.FromMs), math.MaxUint64, o.ClosedThroughMs)...)...)
	if err != nil {
		return false, fmt.Errorf("reward over time: %w", err)
	}
	defer rows.Close()
	var totals []moments
	quality := map[int64]*[3]uint64{} // t → decisions, with feedback, explored
	arms := map[int64]*[2]moments{}   // t → treated, control
	for rows.Next() {
		var (
			t, n, joined, explored, slots uint64
			ver                           uint32
			variant                       string
			sum, sum2                     float64
		)
		if err := rows.Scan(&t, &ver, &variant, &n, &sum, &sum2, &joined, &explored, &slots); err != nil {
			return false, fmt.Errorf("reward over time: %w", err)
		}
		slotted = slotted || slots > 0
		if k := len(o.Series); k == 0 || o.Series[k-1].Version != int(ver) || o.Series[k-1].Variant != variant {
			o.Series = append(o.Series, Series{Version: int(ver), Variant: variant})
			totals = append(totals, moments{})
		}
		s := &o.Series[len(o.Series)-1]
		s.Points = append(s.Points, Point{T: int64(t), Decisions: n, RewardRate: sum / float64(n)})
		totals[len(totals)-1].add(float64(n), sum, sum2)
		q := quality[int64(t)]
		if q == nil {
			q = &[3]uint64{}
			quality[int64(t)] = q
		}
		q[0], q[1], q[2] = q[0]+n, q[1]+joined, q[2]+explored
		if variant != flywheel.VariantImported {
			a := arms[int64(t)]
			if a == nil {
				a = &[2]moments{}
				arms[int64(t)] = a
			}
			side := 0
			if variant == flywheel.VariantControl {
				side = 1
			}
			a[side].add(float64(n), sum, sum2)
		}
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("reward over time: %w", err)
	}
	for i, tot := range totals {
		s := &o.Series[i]
		s.Decisions, s.RewardRate, s.StdErr = uint64(tot.n), tot.mean(), tot.stderr()
	}
	for _, t := range slices.Sorted(maps.Keys(quality)) {
		q := quality[t]
		n := float64(q[0])
		o.Quality = append(o.Quality, Quality{T: t, Decisions: q[0], JoinRate: float64(q[1]) / n,
			DefaultedShare: float64(q[0]-q[1]) / n, ExploredShare: float64(q[2]) / n})
	}
	o.lift(arms)
	return slotted, nil
}

// lift sets o.Lift from the treated and control moments of each bucket,
// when the window holds control decisions.
func (o *Overview) lift(arms map[int64]*[2]moments) {
	var treated, control moments
	for _, a := range arms {
		treated.add(a[0].n, a[0].sum, a[0].sum2)
		control.add(a[1].n, a[1].sum, a[1].sum2)
	}
	if control.n == 0 {
		return
	}
	l := &Lift{Confidence: liftConfidence, Points: []LiftPoint{}}
	for _, t := range slices.Sorted(maps.Keys(arms)) {
		if p, ok := liftOf(t, arms[t][0], arms[t][1]); ok {
			l.Points = append(l.Points, p)
		}
	}
	if p, ok := liftOf(o.FromMs, treated, control); ok {
		l.Total = &p
	}
	o.Lift = l
}

// slots reads the reward of each slot of the model's pages and of the
// page (the sum over its slots) over the window.
func (o *Overview) slots(ctx context.Context, conn driver.Conn, db, model string, bucket time.Duration) error {
	bms := uint64(bucket / time.Millisecond)
	args := append([]any{bms, bms}, recentArgs(model, uint64(o.FromMs), math.MaxUint64, o.ClosedThroughMs)...)
	for _, q := range []struct{ what, sql string }{{"reward by slot", sqlSlotSeries}, {"reward by page", sqlPageSeries}} {
		if err := o.slotSeries(ctx, conn, expand(q.sql, db), args); err != nil {
			return fmt.Errorf("%s: %w", q.what, err)
		}
	}
	return nil
}

// slotSeries appends to o.Slots the series sql answers as rows of bucket,
// slot, count, sum and sum of squares, ordered by slot and bucket.
func (o *Overview) slotSeries(ctx context.Context, conn driver.Conn, sql string, args []any) error {
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	first := len(o.Slots)
	var totals []moments
	for rows.Next() {
		var (
			t, n      uint64
			slot      string
			sum, sum2 float64
		)
		if err := rows.Scan(&t, &slot, &n, &sum, &sum2); err != nil {
			return err
		}
		if k := len(o.Slots); k == first || o.Slots[k-1].Slot != slot {
			o.Slots = append(o.Slots, SlotSeries{Slot: slot})
			totals = append(totals, moments{})
		}
		s := &o.Slots[len(o.Slots)-1]
		s.Points = append(s.Points, Point{T: int64(t), Decisions: n, RewardRate: sum / float64(n)})
		totals[len(totals)-1].add(float64(n), sum, sum2)
	}
	for i, tot := range totals {
		s := &o.Slots[first+i]
		s.Decisions, s.RewardRate, s.StdErr = uint64(tot.n), tot.mean(), tot.stderr()
	}
	return rows.Err()
}

func (o *Overview) runs(ctx context.Context, conn driver.Conn, db, model string) error {
	rows, err := conn.Query(ctx, expand(sqlRetrainRuns, db), model)
	if err != nil {
		return fmt.Errorf("retrain runs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			r       Run
			started uint64
			ver, ch uint32
			cmp     string
		)
		if err := rows.Scan(&started, &r.TookMs, &r.Outcome, &r.Reason, &ver, &ch, &r.TrainRows, &r.HoldoutRows, &cmp); err != nil {
			return fmt.Errorf("retrain runs: %w", err)
		}
		r.StartedMs, r.Version, r.Champion = int64(started), int(ver), int(ch)
		if cmp != "{}" && json.Valid([]byte(cmp)) {
			r.Comparison = json.RawMessage(cmp)
		}
		o.Runs = append(o.Runs, r)
	}
	return rows.Err()
}

func (o *Overview) flow(ctx context.Context, conn driver.Conn, db, model string, now time.Time) error {
	var dec, fb, newest uint64
	if err := conn.QueryRow(ctx, expand(sqlDecisionFlow, db), model).Scan(&dec, &newest); err != nil {
		return fmt.Errorf("ingest flow: %w", err)
	}
	if newest == 0 {
		if err := conn.QueryRow(ctx, expand(sqlNewestDecision, db), model).Scan(&newest); err != nil {
			return fmt.Errorf("ingest flow: %w", err)
		}
	}
	if err := conn.QueryRow(ctx, expand(sqlFeedbackFlow, db)).Scan(&fb); err != nil {
		return fmt.Errorf("ingest flow: %w", err)
	}
	o.Flow = Flow{DecisionsPerSecond: float64(dec) / 60, FeedbackPerSecond: float64(fb) / 60, NewestDecisionMs: int64(newest)}
	if newest > 0 {
		o.Flow.NewestAgeSeconds = now.Sub(time.UnixMilli(int64(newest))).Seconds()
	}
	return nil
}

// late counts the late feedback on model's decisions received from fromMs on.
func (o *Overview) late(ctx context.Context, conn driver.Conn, db, model string, fromMs uint64) error {
	l := &o.Late
	if err := conn.QueryRow(ctx, expand(sqlLateFeedback, db), fromMs, model, model, fromMs).Scan(&l.Feedback, &l.Late, &l.Rescored); err != nil {
		return fmt.Errorf("late feedback: %w", err)
	}
	if l.Feedback > 0 {
		l.LateShare = float64(l.Late) / float64(l.Feedback)
	}
	return nil
}

// References returns the newest value of every reference of model.
func References(ctx context.Context, conn driver.Conn, db, model string) ([]Reference, error) {
	rows, err := conn.Query(ctx, expand(sqlReferences, db), model)
	if err != nil {
		return nil, fmt.Errorf("references: %w", err)
	}
	defer rows.Close()
	out := []Reference{}
	for rows.Next() {
		var (
			r  Reference
			ts uint64
		)
		if err := rows.Scan(&r.Name, &r.Value, &r.Source, &ts); err != nil {
			return nil, fmt.Errorf("references: %w", err)
		}
		r.At = int64(ts)
		out = append(out, r)
	}
	return out, rows.Err()
}

// SetReferences stores reference reward rates of model (name → rate).
func SetReferences(ctx context.Context, conn driver.Conn, db, model string, refs map[string]float64, source string, now time.Time) error {
	for name, v := range refs {
		if err := conn.Exec(ctx, expand(sqlSetReference, db), model, name, v, source, now.UTC(), uint64(now.UnixMilli())); err != nil {
			return fmt.Errorf("store reference %s of %s: %w", name, model, err)
		}
	}
	return nil
}

// The dashboard's statements.
const (
	// decisions_by_time is sorted by model and ts_ms: the read is of the
	// window's granules.
	sqlFirstDecision = `SELECT min(ts_ms) FROM {db}.decisions_by_time WHERE model = ? AND ts_ms >= ?`
	// The closed examples of the window ({recent}: the model and the
	// range pushed into the time-ordered decisions and feedback), per bucket.
	sqlRewardSeries = `SELECT intDiv(ts_ms, ?) * ? AS t, version, variant, count(), sum(reward), sum(reward * reward),
			countIf(feedback_count > 0), sum(explored), countIf(position(event_id, '#') > 0)
		FROM {recent} GROUP BY t, version, variant ORDER BY version, variant, t`
	// The reward of each slot of a model's pages (decisions EVENT_ID#SLOT)
	// and of its pages (the sum over the page's slots, in the bucket of its
	// first slot; the slot column is ''), with the rows of sqlRewardSeries.
	sqlSlotSeries = `SELECT intDiv(ts_ms, ?) * ? AS t, splitByChar('#', event_id)[2] AS slot, count(), sum(reward), sum(reward * reward)
		FROM {recent} WHERE position(event_id, '#') > 0 GROUP BY t, slot ORDER BY slot, t`
	sqlPageSeries = `SELECT intDiv(page_ms, ?) * ? AS t, '' AS slot, count(), sum(page_reward), sum(page_reward * page_reward)
		FROM
		(
			SELECT splitByChar('#', event_id)[1] AS page, min(ts_ms) AS page_ms, sum(reward) AS page_reward
			FROM {recent} WHERE position(event_id, '#') > 0 GROUP BY page
		) AS p
		GROUP BY t ORDER BY t`
	sqlRetrainRuns = `SELECT started_ms, took_ms, outcome, reason, version, champion, train_rows, holdout_rows, comparison
		FROM {db}.retrain_runs WHERE model = ? ORDER BY started_ms DESC LIMIT 50`
	// The flow reads the decisions and feedback of the last day (the
	// granules of the time-ordered tables; a decision or feedback ingested
	// now that was made more than a day ago, from a spool that was cut off
	// that long, is not counted), and the newest decision of all time only
	// when the model made none in it.
	sqlDecisionFlow = `SELECT countIf(ingested_at >= now() - 60), max(ts_ms) FROM {db}.decisions_by_time
		WHERE model = ? AND ts_ms >= (toUInt64(toUInt32(now())) - 86400) * 1000`
	sqlNewestDecision = `SELECT max(ts_ms) FROM {db}.decisions_by_time WHERE model = ?`
	sqlFeedbackFlow   = `SELECT countIf(ingested_at >= now() - 60) FROM {db}.feedback_by_time WHERE ts_ms >= (toUInt64(toUInt32(now())) - 86400) * 1000`
	sqlReferences     = `SELECT name, argMax(value, ts_ms), argMax(source, ts_ms), max(ts_ms)
		FROM {db}.model_references WHERE model = ? GROUP BY name ORDER BY name`
	sqlSetReference = `INSERT INTO {db}.model_references (model, name, value, source, ts, ts_ms) SELECT ?, ?, ?, ?, ?, ?`
	// The feedback received since a time (Unix ms) on decisions of a model:
	// how many, how many after the decision's reward window (its ts_ms is
	// when the user acted, the time the window is judged on), and how many
	// of those within its late window.
	sqlLateFeedback = `SELECT count(), countIf(f_ts_ms > window_end_ms), countIf(f_ts_ms > window_end_ms AND f_ts_ms <= late_end_ms)
		FROM
		(
			SELECT event_id, ts_ms AS f_ts_ms
			FROM {db}.feedback FINAL` + rewardFeedback + ` AND ts >= toDateTime(intDiv(?, 1000)) AND (model = '' OR model = ?)
		) AS fb
		ALL INNER JOIN
		(
			SELECT event_id, max(` + windowDeadline + `) AS window_end_ms, max(` + lateDeadline + `) AS late_end_ms
			FROM {db}.decisions FINAL
			WHERE model = ? AND event_id IN (SELECT event_id FROM {db}.feedback WHERE ts >= toDateTime(intDiv(?, 1000)))
			GROUP BY event_id
		) AS dl USING event_id`
)

// dashboardStatements lists the dashboard's statements for Statements.
func dashboardStatements(db string) []Statement {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return []Statement{
		{Name: "dashboard.first_decision", SQL: expand(sqlFirstDecision, db), Args: []any{"homepage", uint64(0)}, Query: true},
		{Name: "dashboard.reward_series", SQL: expand(sqlRewardSeries, db), Args: append([]any{uint64(3600000), uint64(3600000)}, recentArgs("homepage", 0, math.MaxUint64, math.MaxUint64)...), Query: true},
		{Name: "dashboard.reward_series.classifier", SQL: expand(sqlRewardSeries, db), Args: append([]any{uint64(60000), uint64(60000)}, recentArgs("ctr", 0, math.MaxUint64, math.MaxUint64)...), Query: true},
		{Name: "dashboard.slot_series", SQL: expand(sqlSlotSeries, db), Args: append([]any{uint64(60000), uint64(60000)}, recentArgs("page", 0, math.MaxUint64, math.MaxUint64)...), Query: true},
		{Name: "dashboard.page_series", SQL: expand(sqlPageSeries, db), Args: append([]any{uint64(60000), uint64(60000)}, recentArgs("page", 0, math.MaxUint64, math.MaxUint64)...), Query: true},
		{Name: "dashboard.retrain_runs", SQL: expand(sqlRetrainRuns, db), Args: []any{"homepage"}, Query: true},
		// counts of the last minute: the fixture's ingested_at is fixed
		{Name: "dashboard.decision_flow", SQL: expand(sqlDecisionFlow, db), Args: []any{"homepage"}, Query: true},
		{Name: "dashboard.newest_decision", SQL: expand(sqlNewestDecision, db), Args: []any{"homepage"}, Query: true},
		{Name: "dashboard.feedback_flow", SQL: expand(sqlFeedbackFlow, db), Query: true},
		{Name: "dashboard.set_reference", SQL: expand(sqlSetReference, db), Args: []any{"homepage", "random", 0.25, "sim", at, uint64(at.UnixMilli())}},
		{Name: "dashboard.references", SQL: expand(sqlReferences, db), Args: []any{"homepage"}, Query: true},
		{Name: "dashboard.late_feedback", SQL: expand(sqlLateFeedback, db), Args: []any{uint64(0), "homepage", "homepage", uint64(0)}, Query: true},
	}
}
