package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/kafka"
)

// runImport is `flywheel import --model X [--mapping FILE.yaml] FILE…`:
// historical decisions with their logged probabilities, and their feedback,
// written to the decisions and feedback topics as serving writes live ones,
// so that ingest, the views, retrain and eval treat them like any other.
//
// Every file is read twice: first to validate all of it (nothing is written
// while any line is bad; each error names the file, the line and the field,
// and at most --max-errors are listed), then to write it. Ids are derived
// from each line's content and number (unless the line gives its own), and
// ingest keeps one row per id, so importing a file again, or again after an
// import stopped midway, counts each line once.
func runImport(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("import", getenv, stdout, stderr)
	modelName := c.fs.String("model", "", "the model the decisions belong to")
	mapping := c.fs.String("mapping", "", "a CSV column mapping (YAML; docs/operations.md): the FILEs are CSV; without it they are JSON lines in the topics' record schema")
	dryRun := c.fs.Bool("dry-run", false, "validate the files and write nothing")
	maxErrors := c.fs.Int("max-errors", 20, "stop validating after this many bad lines")
	quiet := c.fs.Bool("quiet", false, "no progress line")
	files, err := c.parse(args)
	if err != nil {
		return err
	}
	if *modelName == "" || len(files) == 0 {
		return errors.New("import needs --model NAME and at least one FILE")
	}
	if *maxErrors < 1 {
		return errors.New("--max-errors must be at least 1")
	}
	e, err := c.env()
	if err != nil {
		return err
	}
	mc, ok := e.cfg.Models[*modelName]
	if !ok {
		return flywheel.Errorf(flywheel.ENOTFOUND, "model %q is not configured", *modelName)
	}
	imp := &importer{model: *modelName, mc: mc, limits: e.cfg.Limits.WithDefaults()}
	if *mapping != "" {
		m, err := loadImportMapping(*mapping, imp.limits)
		if err != nil {
			return err
		}
		if mc.Kind != flywheel.KindRanker {
			return fmt.Errorf("--mapping: model %q is a %s; CSV import is for rankers (use JSON lines)", *modelName, mc.Kind)
		}
		imp.csv = m
	}
	var progress io.Writer
	if !*quiet {
		progress = e.stderr
	}

	// Pass 1: validate everything before the first side effect.
	start := time.Now()
	var bad []string
	var total importCounts
	for _, f := range files {
		n, errs := imp.file(ctx, f, *maxErrors-len(bad), nil, progress, "checking")
		total.add(n)
		bad = append(bad, errs...)
		if len(bad) >= *maxErrors || ctx.Err() != nil {
			break
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(bad) > 0 {
		more := ""
		if len(bad) >= *maxErrors {
			more = fmt.Sprintf(" (stopped at %d; --max-errors)", *maxErrors)
		}
		return flywheel.Errorf(flywheel.EINVALID, "nothing imported: %d bad lines%s:\n  %s", len(bad), more, strings.Join(bad, "\n  "))
	}
	if *dryRun {
		fmt.Fprintf(e.stdout, "%s: %d lines valid: %d decisions, %d feedback (dry run: nothing written)\n",
			strings.Join(files, ", "), total.lines, total.decisions, total.feedback)
		return nil
	}

	// Pass 2: write. connect migrates, bootstraps version 1 (the uniform
	// policy) and claims the topics, as serving does.
	p, err := e.connect(ctx, true)
	if err != nil {
		return err
	}
	defer p.Close()
	t := e.cfg.Kafka.Topics()
	w := &importWriter{dec: kafka.NewLogWriter(e.cfg.Kafka, t.Decisions), fb: kafka.NewLogWriter(e.cfg.Kafka, t.Feedback)}
	defer w.Close()
	var written importCounts
	for _, f := range files {
		n, errs := imp.file(ctx, f, 1, w, progress, "importing")
		written.add(n)
		if len(errs) > 0 {
			return fmt.Errorf("%s (running the same import again is safe: what was written counts once)", errs[0])
		}
	}
	if err := w.flush(ctx); err != nil {
		return fmt.Errorf("%w (running the same import again is safe: what was written counts once)", err)
	}
	fmt.Fprintf(e.stdout, "imported %s into model %s: %d lines, %d decisions, %d feedback in %v (topics %s, %s; ingest makes them queryable; importing again counts each line once)\n",
		strings.Join(files, ", "), imp.model, written.lines, written.decisions, written.feedback,
		time.Since(start).Round(time.Millisecond), t.Decisions, t.Feedback)
	return nil
}

// importMessage is err's message: a flywheel error's without its code.
func importMessage(err error) string {
	if flywheel.ErrorCode(err) == flywheel.EINTERNAL {
		return err.Error()
	}
	return flywheel.ErrorMessage(err)
}

// importCounts counts what an import read.
type importCounts struct{ lines, decisions, feedback int }

func (c *importCounts) add(o importCounts) {
	c.lines += o.lines
	c.decisions += o.decisions
	c.feedback += o.feedback
}

// importer turns the lines of one model's files into log records.
type importer struct {
	model  string
	mc     flywheel.ModelConfig
	limits flywheel.Limits
	csv    *importMapping // nil: JSON lines
}

// importRecord is what one line becomes: a decision, feedback, or both.
type importRecord struct {
	decision *flywheel.Decision
	feedback *flywheel.Feedback
}

// lineError is a bad line: FILE:LINE: FIELD: message.
func lineError(file string, line int, field, format string, args ...any) error {
	if field != "" {
		field += ": "
	}
	return fmt.Errorf("%s:%d: %s%s", file, line, field, fmt.Sprintf(format, args...))
}

// file reads one file; with w it writes each record, else it only checks.
// It returns what it read and at most maxErrors errors.
func (imp *importer) file(ctx context.Context, name string, maxErrors int, w *importWriter, progress io.Writer, verb string) (importCounts, []string) {
	var n importCounts
	f, err := os.Open(name)
	if err != nil {
		return n, []string{err.Error()}
	}
	defer f.Close()
	size := int64(0)
	if st, err := f.Stat(); err == nil {
		size = st.Size()
	}
	cr := &countingReader{r: f}
	pr := newProgress(progress, verb, name, size)
	var errs []string
	emit := func(line int, recs []importRecord, err error) bool {
		n.lines++
		if err != nil {
			errs = append(errs, err.Error())
			return len(errs) < maxErrors
		}
		for _, r := range recs {
			if r.decision != nil {
				n.decisions++
			}
			if r.feedback != nil {
				n.feedback++
			}
			if w != nil {
				if err := w.add(ctx, r); err != nil {
					errs = append(errs, fmt.Sprintf("%s:%d: %v", name, line, err))
					return false
				}
			}
		}
		pr.update(cr.n, n)
		return ctx.Err() == nil
	}
	if imp.csv != nil {
		err = imp.csv.read(&lineLimitReader{r: cr, max: kafka.MaxRecordBytes}, name, imp, emit)
	} else {
		err = imp.readJSONLines(cr, name, emit)
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		errs = append(errs, err.Error())
	}
	pr.done(cr.n, n)
	return n, errs
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// lineLimitReader fails once more than max bytes pass without a newline,
// so that a CSV file with an endless line costs bounded memory (a row
// longer than a Kafka record could not be imported anyway).
type lineLimitReader struct {
	r    io.Reader
	max  int
	line int // bytes since the last newline
}

func (l *lineLimitReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	for _, b := range p[:n] {
		if b == '\n' {
			l.line = 0
		} else if l.line++; l.line > l.max {
			return 0, fmt.Errorf("a line is longer than %d bytes, more than a Kafka record takes", l.max)
		}
	}
	return n, err
}

// progress prints one line, rewritten at most every 200 ms.
type progress struct {
	w          io.Writer
	verb, name string
	size       int64
	last       time.Time
}

func newProgress(w io.Writer, verb, name string, size int64) *progress {
	return &progress{w: w, verb: verb, name: name, size: size}
}

func (p *progress) line(read int64, n importCounts) string {
	pct := 100.0
	if p.size > 0 {
		pct = 100 * float64(read) / float64(p.size)
	}
	return fmt.Sprintf("\r%s %s: %5.1f%%  %d lines  %d decisions  %d feedback", p.verb, p.name, pct, n.lines, n.decisions, n.feedback)
}

func (p *progress) update(read int64, n importCounts) {
	if p.w == nil || time.Since(p.last) < 200*time.Millisecond {
		return
	}
	p.last = time.Now()
	fmt.Fprint(p.w, p.line(read, n))
}

func (p *progress) done(read int64, n importCounts) {
	if p.w != nil {
		fmt.Fprintln(p.w, p.line(read, n))
	}
}

// importID is a deterministic id for line number line of content parts:
// the same line imported again gets the same id, so it counts once.
func importID(model string, line int, parts ...string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d", model, line)
	for _, p := range parts {
		h.Write([]byte{0x1f})
		h.Write([]byte(p))
	}
	return "imp-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// readJSONLines reads one record of the topics' schema per line: a decision
// (a line with "kind") or feedback. Blank lines are skipped.
func (imp *importer) readJSONLines(r io.Reader, name string, emit func(int, []importRecord, error) bool) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for line := 1; ; line++ {
		b, err := readLine(br, kafka.MaxRecordBytes)
		if err == io.EOF && len(b) == 0 {
			return nil
		}
		if errors.Is(err, errLineTooLong) {
			if !emit(line, nil, lineError(name, line, "", "longer than %d bytes, the largest record Kafka takes", kafka.MaxRecordBytes)) {
				return nil
			}
			continue
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("%s:%d: %w", name, line, err)
		}
		b = bytes.TrimSpace(b)
		if len(b) == 0 {
			continue
		}
		rec, perr := imp.jsonLine(b, line)
		if perr != nil {
			perr = lineError(name, line, "", "%v", importMessage(perr))
		}
		if !emit(line, []importRecord{rec}, perr) || err == io.EOF {
			return nil
		}
	}
}

var errLineTooLong = errors.New("line too long")

// readLine reads one line without its newline; a line longer than max is
// read through and reported as errLineTooLong, so memory stays bounded.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var out []byte
	long := false
	for {
		chunk, err := br.ReadSlice('\n')
		if !long && len(out)+len(chunk) > max+1 {
			long, out = true, nil
		}
		if !long {
			out = append(out, chunk...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if long {
			return nil, errLineTooLong
		}
		return bytes.TrimSuffix(out, []byte("\n")), err
	}
}

// jsonLine decodes and checks one JSON line.
func (imp *importer) jsonLine(b []byte, line int) (importRecord, error) {
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		return importRecord{}, fmt.Errorf("not a JSON object: %v", err)
	}
	strict := func(v any) error {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		return dec.Decode(v)
	}
	if _, ok := keys["kind"]; ok {
		var d flywheel.Decision
		if err := strict(&d); err != nil {
			return importRecord{}, jsonFieldError(err)
		}
		if err := imp.checkDecision(&d, true); err != nil {
			return importRecord{}, err
		}
		return importRecord{decision: &d}, nil
	}
	var f flywheel.Feedback
	if err := strict(&f); err != nil {
		return importRecord{}, jsonFieldError(err)
	}
	if f.Schema == 0 {
		f.Schema = flywheel.SchemaVersion
	}
	if f.Model == "" {
		f.Model = imp.model
	}
	if f.FeedbackID == "" && f.EventID != "" {
		f.FeedbackID = importID(imp.model, line, string(b))
	}
	if f.Model != imp.model {
		return importRecord{}, fmt.Errorf("model: %q, not --model %q", f.Model, imp.model)
	}
	if f.Time.IsZero() && f.ActedAt != nil {
		f.Time = *f.ActedAt
	}
	if err := f.Validate(); err != nil {
		return importRecord{}, err
	}
	if err := imp.mc.Reward.CheckReward("reward", f.Reward); err != nil {
		return importRecord{}, err
	}
	return importRecord{feedback: &f}, nil
}

// jsonFieldError names the field of a JSON decoding error.
func jsonFieldError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("%s: a JSON %s where %s goes", te.Field, te.Value, te.Type)
	}
	return err
}

// checkDecision fills a decision's defaults (schema, model, kind, variant
// imported with version 0, the model's reward rule) and checks it as
// serving and ingest do.
func (imp *importer) checkDecision(d *flywheel.Decision, fill bool) error {
	if fill {
		if d.Schema == 0 {
			d.Schema = flywheel.SchemaVersion
		}
		if d.Model == "" {
			d.Model = imp.model
		}
		if d.Kind == "" {
			d.Kind = imp.mc.Kind
		}
		if d.Variant == "" && d.Version == 0 {
			d.Variant = flywheel.VariantImported
		}
		if d.Reward == (flywheel.RewardRule{}) {
			d.Reward = imp.mc.RewardRule()
		}
	}
	if d.Model != imp.model {
		return fmt.Errorf("model: %q, not --model %q", d.Model, imp.model)
	}
	if d.Kind != imp.mc.Kind {
		return fmt.Errorf("kind: %q, but model %q is a %s", d.Kind, imp.model, imp.mc.Kind)
	}
	if err := d.Validate(); err != nil {
		return err
	}
	if err := d.Context.Validate("context", imp.limits); err != nil {
		return err
	}
	if d.Kind != flywheel.KindRanker {
		return nil
	}
	if len(d.Actions) > imp.limits.MaxActions {
		return fmt.Errorf("actions: %d actions; limits.max_actions is %d", len(d.Actions), imp.limits.MaxActions)
	}
	seen := make(map[string]bool, len(d.Actions))
	for i, a := range d.Actions {
		if a.ID == "" {
			return fmt.Errorf("actions[%d].id is empty", i)
		}
		if seen[a.ID] {
			return fmt.Errorf("actions[%d].id %q appears twice", i, a.ID)
		}
		seen[a.ID] = true
		if err := a.Features.Validate(fmt.Sprintf("actions[%d].features", i), imp.limits); err != nil {
			return err
		}
	}
	for i, p := range d.Probabilities {
		if math.IsNaN(p) || p < 0 || p > 1 {
			return fmt.Errorf("probabilities[%d] is %v: a probability is between 0 and 1", i, p)
		}
	}
	if p := d.Probabilities[d.ChosenIndex]; p <= 0 {
		return fmt.Errorf("probabilities[%d] (the chosen action's) is %v: it must be above 0 for off-policy evaluation", d.ChosenIndex, p)
	}
	if d.Chosen == "" {
		d.Chosen = d.Actions[d.ChosenIndex].ID
	} else if d.Chosen != d.Actions[d.ChosenIndex].ID {
		return fmt.Errorf("chosen: %q, but actions[%d] (chosen_index) is %q", d.Chosen, d.ChosenIndex, d.Actions[d.ChosenIndex].ID)
	}
	return nil
}

// importWriter writes records to the topics as the event log does (keyed
// by event id, acks from all in-sync replicas), in batches, resending only
// what Kafka reports as not written.
type importWriter struct {
	dec, fb  *kafka.LogWriter
	dmsgs    []kafka.Message
	fmsgs    []kafka.Message
	buffered int
}

const importBatch = 500

func (w *importWriter) add(ctx context.Context, r importRecord) error {
	if d := r.decision; d != nil {
		v, err := encodeImported(d)
		if err != nil {
			return fmt.Errorf("encode decision %s: %w", d.EventID, err)
		}
		if n := len(v) + len(d.EventID); n > kafka.MaxRecordBytes {
			return fmt.Errorf("the decision's record would be %d bytes, more than the %d a Kafka record takes", n, kafka.MaxRecordBytes)
		}
		w.dmsgs = append(w.dmsgs, kafka.Message{Key: []byte(d.EventID), Value: v})
		w.buffered += len(v)
	}
	if f := r.feedback; f != nil {
		v, err := json.Marshal(f)
		if err != nil {
			return fmt.Errorf("encode feedback %s: %w", f.FeedbackID, err)
		}
		w.fmsgs = append(w.fmsgs, kafka.Message{Key: []byte(f.EventID), Value: v})
	}
	if len(w.dmsgs)+len(w.fmsgs) >= importBatch || w.buffered >= 4<<20 {
		return w.flush(ctx)
	}
	return nil
}

// encodeImported encodes d as its record; actions given as RawActions too
// (a CSV import's, the same for every row) are written as they are, not
// encoded again.
func encodeImported(d *flywheel.Decision) ([]byte, error) {
	if d.RawActions == nil {
		return json.Marshal(d)
	}
	r, err := d.Record()
	if err != nil {
		return nil, err
	}
	return json.Marshal(r)
}

// flush writes the decisions buffered, then their feedback.
func (w *importWriter) flush(ctx context.Context) error {
	if err := writeAll(ctx, w.dec, w.dmsgs); err != nil {
		return fmt.Errorf("write decisions: %w", err)
	}
	if err := writeAll(ctx, w.fb, w.fmsgs); err != nil {
		return fmt.Errorf("write feedback: %w", err)
	}
	w.dmsgs, w.fmsgs, w.buffered = w.dmsgs[:0], w.fmsgs[:0], 0
	return nil
}

func (w *importWriter) Close() {
	w.dec.Close()
	w.fb.Close()
}

// writeAll writes msgs, retrying with backoff for up to two minutes and
// resending only what a partial failure reports as not written.
func writeAll(ctx context.Context, lw *kafka.LogWriter, msgs []kafka.Message) error {
	backoff, deadline := 100*time.Millisecond, time.Now().Add(2*time.Minute)
	for len(msgs) > 0 {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := lw.WriteMessages(wctx, msgs...)
		cancel()
		if err == nil {
			return nil
		}
		var we kafka.WriteErrors
		if errors.As(err, &we) && len(we) == len(msgs) {
			var rest []kafka.Message
			for i, e := range we {
				if e != nil {
					rest = append(rest, msgs[i])
				}
			}
			msgs = rest
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return nil
}

// importMapping is a CSV column mapping (docs/operations.md, "Importing
// history"): which columns hold what, for one ranker's logs.
type importMapping struct {
	Delimiter  string `yaml:"delimiter"`   // one character; default ","
	EventID    string `yaml:"event_id"`    // column with the decision's id; default: derived from the row
	Time       string `yaml:"time"`        // column with the decision's time; required
	TimeFormat string `yaml:"time_format"` // rfc3339 (default), unix, unix_ms, or a Go time layout
	Action     string `yaml:"action"`      // column with the chosen action's id; required
	Slot       string `yaml:"slot"`        // column with the position or slot shown; becomes context feature slot^id
	Propensity string `yaml:"propensity"`  // column with the logged probability of the chosen action; required
	Reward     string `yaml:"reward"`      // column with the reward; an empty cell: no feedback
	RewardType string `yaml:"reward_type"` // the feedback's type; default "import"
	RewardTime string `yaml:"reward_time"` // column with the time of the reward; default the decision's
	// Context maps namespace → column → type (string, number, bool, tags).
	Context map[string]map[string]string `yaml:"context"`
	Actions struct {
		File     string                       `yaml:"file"` // CSV of the candidate actions, relative to the mapping
		ID       string                       `yaml:"id"`   // its column of action ids
		Features map[string]map[string]string `yaml:"features"`
	} `yaml:"actions"`

	comma      rune
	actions    []flywheel.Action
	rawActions []flywheel.RawAction // actions, encoded once
	actionAt   map[string]int
}

// feature types of a mapped column
const (
	colString = "string"
	colNumber = "number"
	colBool   = "bool"
	colTags   = "tags" // "|"-separated values: a bag of categoricals
)

// loadImportMapping reads and checks a mapping and its actions file.
func loadImportMapping(path string, limits flywheel.Limits) (*importMapping, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--mapping: %w", err)
	}
	var m importMapping
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("mapping %s: %w", path, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("mapping %s: %s", path, fmt.Sprintf(format, args...))
	}
	m.comma = ','
	if m.Delimiter != "" {
		r := []rune(m.Delimiter)
		if len(r) != 1 || r[0] == '"' || r[0] == '\n' || r[0] == '\r' {
			return nil, bad("delimiter must be one character (not a quote or a newline); got %q", m.Delimiter)
		}
		m.comma = r[0]
	}
	for _, req := range []struct{ field, col string }{{"time", m.Time}, {"action", m.Action}, {"propensity", m.Propensity}, {"actions.file", m.Actions.File}, {"actions.id", m.Actions.ID}} {
		if req.col == "" {
			return nil, bad("%s is required", req.field)
		}
	}
	switch m.TimeFormat {
	case "", "rfc3339", "unix", "unix_ms":
	default:
		if !strings.ContainsAny(m.TimeFormat, "0123456789") {
			return nil, bad("time_format must be rfc3339, unix, unix_ms or a Go layout such as \"2006-01-02 15:04:05\"; got %q", m.TimeFormat)
		}
	}
	if m.RewardType == "" {
		m.RewardType = "import"
	}
	for field, spec := range map[string]map[string]map[string]string{"context": m.Context, "actions.features": m.Actions.Features} {
		for ns, cols := range spec {
			if ns == "" {
				return nil, bad("%s has an empty namespace", field)
			}
			for col, typ := range cols {
				switch typ {
				case colString, colNumber, colBool, colTags:
				default:
					return nil, bad("%s.%s.%s: type must be string, number, bool or tags; got %q", field, ns, col, typ)
				}
			}
		}
	}
	if _, ok := m.Context["slot"]; ok && m.Slot != "" {
		return nil, bad("context namespace slot is taken by the slot column")
	}
	file := m.Actions.File
	if !filepath.IsAbs(file) {
		file = filepath.Join(filepath.Dir(path), file)
	}
	if err := m.loadActions(file, limits); err != nil {
		return nil, bad("actions.file: %v", err)
	}
	return &m, nil
}

// loadActions reads the candidate actions, each with its features.
func (m *importMapping) loadActions(file string, limits flywheel.Limits) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	cr := csv.NewReader(f)
	cr.Comma = m.comma
	header, err := cr.Read()
	if err != nil {
		return fmt.Errorf("%s: header: %v", file, err)
	}
	cols := columnIndex(header)
	idCol, ok := cols[m.Actions.ID]
	if !ok {
		return fmt.Errorf("%s has no column %q (actions.id)", file, m.Actions.ID)
	}
	feats, err := m.featureColumns("actions.features", m.Actions.Features, cols, file)
	if err != nil {
		return err
	}
	m.actionAt = map[string]int{}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		line, _ := cr.FieldPos(0)
		if err != nil {
			return err
		}
		id := rec[idCol]
		if id == "" {
			return lineError(file, line, m.Actions.ID, "the action id is empty")
		}
		if _, dup := m.actionAt[id]; dup {
			return lineError(file, line, m.Actions.ID, "action %q appears twice", id)
		}
		fs, err := buildFeatures(feats, rec)
		if err != nil {
			return lineError(file, line, "", "%v", err)
		}
		if err := fs.Validate("features", limits); err != nil {
			return lineError(file, line, "", "%v", importMessage(err))
		}
		m.actionAt[id] = len(m.actions)
		m.actions = append(m.actions, flywheel.Action{ID: id, Features: fs})
	}
	switch {
	case len(m.actions) == 0:
		return fmt.Errorf("%s lists no actions", file)
	case len(m.actions) > limits.MaxActions:
		return fmt.Errorf("%s lists %d actions; limits.max_actions is %d", file, len(m.actions), limits.MaxActions)
	}
	m.rawActions = make([]flywheel.RawAction, len(m.actions))
	for i, a := range m.actions {
		m.rawActions[i].ID = a.ID
		if len(a.Features) > 0 {
			if m.rawActions[i].Features, err = json.Marshal(a.Features); err != nil {
				return fmt.Errorf("%s: action %q: %v", file, a.ID, err)
			}
		}
	}
	return nil
}

// mappedColumn is one feature column: where it is and what it becomes.
type mappedColumn struct {
	index     int
	ns, name  string
	typ, head string
}

func columnIndex(header []string) map[string]int {
	cols := make(map[string]int, len(header))
	for i, h := range header {
		if _, dup := cols[h]; !dup {
			cols[h] = i
		}
	}
	return cols
}

// featureColumns resolves a namespace → column → type spec against a
// header, in a stable order.
func (m *importMapping) featureColumns(field string, spec map[string]map[string]string, cols map[string]int, file string) ([]mappedColumn, error) {
	var out []mappedColumn
	for ns, cs := range spec {
		for col, typ := range cs {
			i, ok := cols[col]
			if !ok {
				return nil, fmt.Errorf("%s has no column %q (%s.%s)", file, col, field, ns)
			}
			out = append(out, mappedColumn{index: i, ns: ns, name: col, typ: typ, head: col})
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].index < out[b].index })
	return out, nil
}

// buildFeatures makes the features of one row; an empty cell is no feature.
func buildFeatures(cols []mappedColumn, rec []string) (flywheel.Features, error) {
	fs := flywheel.Features{}
	for _, c := range cols {
		s := rec[c.index]
		if s == "" {
			continue
		}
		var v any
		switch c.typ {
		case colString:
			v = s
		case colNumber:
			x, err := strconv.ParseFloat(s, 64)
			if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
				return nil, fmt.Errorf("column %s: %q is not a finite number", c.head, s)
			}
			v = x
		case colBool:
			b, err := strconv.ParseBool(s)
			if err != nil {
				return nil, fmt.Errorf("column %s: %q is not a bool (true, false, 1, 0)", c.head, s)
			}
			v = b
		case colTags:
			v = strings.Split(s, "|")
		}
		if fs[c.ns] == nil {
			fs[c.ns] = map[string]any{}
		}
		fs[c.ns][c.name] = v
	}
	return fs, nil
}

// parseTime reads a time cell in the mapping's format.
func (m *importMapping) parseTime(s string) (time.Time, error) {
	switch m.TimeFormat {
	case "", "rfc3339":
		return time.Parse(time.RFC3339Nano, s)
	case "unix", "unix_ms":
		x, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
			return time.Time{}, fmt.Errorf("not a number")
		}
		if m.TimeFormat == "unix_ms" {
			x /= 1000
		}
		sec, frac := math.Modf(x)
		return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
	}
	return time.Parse(m.TimeFormat, s)
}

// read reads a CSV file with a header: one decision per row, with its
// feedback when the reward cell is not empty.
func (m *importMapping) read(r io.Reader, name string, imp *importer, emit func(int, []importRecord, error) bool) error {
	cr := csv.NewReader(r)
	cr.Comma = m.comma
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		return fmt.Errorf("%s:1: header: %v", name, err)
	}
	header = slices.Clone(header) // the reader reuses its record
	cols := columnIndex(header)
	col := func(field, c string) (int, error) {
		if c == "" {
			return -1, nil
		}
		i, ok := cols[c]
		if !ok {
			return 0, fmt.Errorf("%s has no column %q (mapping's %s)", name, c, field)
		}
		return i, nil
	}
	var idx [7]int
	for i, f := range []struct{ field, c string }{{"event_id", m.EventID}, {"time", m.Time}, {"action", m.Action}, {"slot", m.Slot},
		{"propensity", m.Propensity}, {"reward", m.Reward}, {"reward_time", m.RewardTime}} {
		if idx[i], err = col(f.field, f.c); err != nil {
			return err
		}
	}
	iEvent, iTime, iAction, iSlot, iProp, iReward, iRewardTime := idx[0], idx[1], idx[2], idx[3], idx[4], idx[5], idx[6]
	ctxCols, err := m.featureColumns("context", m.Context, cols, name)
	if err != nil {
		return err
	}
	rule := imp.mc.RewardRule()
	k := len(m.actions)
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		line, _ := cr.FieldPos(0)
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				line = pe.Line
			}
			if !emit(line, nil, lineError(name, line, "", "%v", err)) || !errors.As(err, &pe) {
				return nil
			}
			continue
		}
		d, fb, err := m.row(rec, header, line, imp, rule, k, iEvent, iTime, iAction, iSlot, iProp, iReward, iRewardTime, ctxCols)
		if err != nil {
			err = lineError(name, line, "", "%v", err)
		}
		if !emit(line, []importRecord{{decision: d, feedback: fb}}, err) {
			return nil
		}
	}
}

// row turns one CSV row into its decision and feedback.
func (m *importMapping) row(rec, header []string, line int, imp *importer, rule flywheel.RewardRule, k int,
	iEvent, iTime, iAction, iSlot, iProp, iReward, iRewardTime int, ctxCols []mappedColumn) (*flywheel.Decision, *flywheel.Feedback, error) {
	size := 0
	for _, s := range rec {
		size += len(s) + 1
	}
	if size > kafka.MaxRecordBytes {
		return nil, nil, fmt.Errorf("the row is %d bytes, more than a Kafka record takes", size)
	}
	cell := func(i int) string { return rec[i] }
	id := ""
	if iEvent >= 0 {
		if id = cell(iEvent); id == "" {
			return nil, nil, fmt.Errorf("column %s (event_id) is empty", header[iEvent])
		}
		if len(id) > imp.limits.MaxStringBytes {
			return nil, nil, fmt.Errorf("column %s (event_id) is longer than %d bytes", header[iEvent], imp.limits.MaxStringBytes)
		}
	} else {
		id = importID(imp.model, line, rec...)
	}
	ts, err := m.parseTime(cell(iTime))
	if err != nil {
		return nil, nil, fmt.Errorf("column %s (time): %q is not a time in format %s", header[iTime], cell(iTime), cmp.Or(m.TimeFormat, "rfc3339"))
	}
	chosen, ok := m.actionAt[cell(iAction)]
	if !ok {
		return nil, nil, fmt.Errorf("column %s (action): %q is not an action of the actions file", header[iAction], cell(iAction))
	}
	p, err := strconv.ParseFloat(cell(iProp), 64)
	if err != nil || math.IsNaN(p) || p <= 0 || p > 1 || k == 1 && p != 1 {
		return nil, nil, fmt.Errorf("column %s (propensity): %q is not a probability in (0, 1]", header[iProp], cell(iProp))
	}
	ctx, err := buildFeatures(ctxCols, rec)
	if err != nil {
		return nil, nil, err
	}
	if iSlot >= 0 && cell(iSlot) != "" {
		ctx["slot"] = map[string]any{"id": cell(iSlot)}
	}
	// Only the chosen action's probability is known; the others share the
	// rest evenly (training and evaluation read only the chosen one's).
	probs := make([]float64, k)
	for i := range probs {
		probs[i] = (1 - p) / float64(max(k-1, 1))
	}
	probs[chosen] = p
	d := &flywheel.Decision{Schema: flywheel.SchemaVersion, EventID: id, Time: ts.UTC(), Model: imp.model, Kind: flywheel.KindRanker,
		Variant: flywheel.VariantImported, Context: ctx, Actions: m.actions, RawActions: m.rawActions, Probabilities: probs, ChosenIndex: chosen,
		Chosen: m.actions[chosen].ID, Reward: rule}
	if err := imp.checkDecision(d, false); err != nil {
		return nil, nil, err
	}
	if iReward < 0 || cell(iReward) == "" {
		return d, nil, nil
	}
	reward, err := strconv.ParseFloat(cell(iReward), 64)
	if err != nil {
		return nil, nil, fmt.Errorf("column %s (reward): %q is not a number", header[iReward], cell(iReward))
	}
	if err := imp.mc.Reward.CheckReward("column "+header[iReward]+" (reward)", reward); err != nil {
		return nil, nil, errors.New(importMessage(err))
	}
	at := d.Time
	if iRewardTime >= 0 && cell(iRewardTime) != "" {
		if at, err = m.parseTime(cell(iRewardTime)); err != nil {
			return nil, nil, fmt.Errorf("column %s (reward_time): %q is not a time in format %s", header[iRewardTime], cell(iRewardTime), cmp.Or(m.TimeFormat, "rfc3339"))
		}
		if at.Before(d.Time) {
			return nil, nil, fmt.Errorf("column %s (reward_time): %s is before the decision's time %s", header[iRewardTime], cell(iRewardTime), cell(iTime))
		}
	}
	fb := &flywheel.Feedback{Schema: flywheel.SchemaVersion, FeedbackID: id + "/reward", EventID: id, Time: at.UTC(),
		Reward: reward, Type: m.RewardType, Model: imp.model}
	return d, fb, nil
}
