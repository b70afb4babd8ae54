package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/clickhouse"
	"github.com/flywheel-dev/flywheel/model"
)

// defaultExplainTop is how many weights `models explain` lists unless --top
// says otherwise.
const defaultExplainTop = 20

// runExplain is `flywheel models explain NAME [--version N] [--top K]
// [--json]`: the features and crosses with the largest effect in a version
// (the champion by default), with the readable names retraining kept behind
// their hashed indices.
func runExplain(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("models", getenv, stdout, stderr) // the checks of `models`; its own flags
	ver := c.fs.Int("version", 0, "the version to explain (default: the champion)")
	top := c.fs.Int("top", defaultExplainTop, "how many weights to list, by effect")
	asJSON := c.fs.Bool("json", false, "print JSON")
	rest, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return errors.New("models explain needs one model name: models explain NAME [--version N] [--top K] [--json]")
	}
	if *top < 1 {
		return fmt.Errorf("models explain: --top must be at least 1; got %d", *top)
	}
	e, err := c.env()
	if err != nil {
		return err
	}
	return e.explain(ctx, rest[0], *ver, *top, *asJSON)
}

func (e *env) explain(ctx context.Context, name string, ver, top int, asJSON bool) error {
	p, err := e.connect(ctx, false)
	if err != nil {
		return err
	}
	defer p.Close()
	x, err := p.registry.Explain(ctx, name, ver, top)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(e.stdout, x)
	}
	_, err = fmt.Fprint(e.stdout, x.String())
	return err
}

// decisionExplanation is what `eval --explain` prints: one logged decision
// scored again by a version, each action's score broken into its terms.
type decisionExplanation struct {
	Model     string              `json:"model"`
	EventID   string              `json:"event_id"`
	LoggedBy  int                 `json:"logged_by_version"`
	Version   int                 `json:"version"`
	Chosen    string              `json:"chosen"`
	ActionIDs []string            `json:"action_ids"`
	Logged    []float64           `json:"logged_probabilities"`
	Actions   []model.ActionScore `json:"actions"`
}

// explainTerms is how many terms of each action's score eval --explain
// prints (JSON has them all).
const explainTerms = 6

// explainDecision is `flywheel eval --explain EVENT_ID --model X [--version
// N]`: the decision's scores by the version that made it (or version ver),
// broken into named terms.
func (e *env) explainDecision(ctx context.Context, name, eventID string, ver int, asJSON bool) error {
	if name == "" {
		return errors.New("eval --explain needs --model NAME")
	}
	p, err := e.connect(ctx, false)
	if err != nil {
		return err
	}
	defer p.Close()
	tr := clickhouse.NewTraining(p.conn, e.cfg.ClickHouse.Database())
	d, err := tr.Decision(ctx, name, eventID)
	if err != nil {
		return err
	}
	var fctx flywheel.Features
	if err := json.Unmarshal([]byte(d.ContextJSON), &fctx); err != nil {
		return fmt.Errorf("decision %s: context: %w", eventID, err)
	}
	var actions []flywheel.Action
	if d.ActionsJSON != "" {
		if err := json.Unmarshal([]byte(d.ActionsJSON), &actions); err != nil {
			return fmt.Errorf("decision %s: actions: %w", eventID, err)
		}
	} else {
		byKey := map[string]flywheel.Action{}
		if err := tr.Actions(ctx, d.ActionKeys, func(key, js string) error {
			var a flywheel.Action
			if err := json.Unmarshal([]byte(js), &a); err != nil {
				return fmt.Errorf("action %s: %w", key, err)
			}
			byKey[key] = a
			return nil
		}); err != nil {
			return err
		}
		for _, k := range d.ActionKeys {
			a, ok := byKey[k]
			if !ok {
				return fmt.Errorf("decision %s: action %s is missing from the actions table", eventID, k)
			}
			actions = append(actions, a)
		}
	}
	if ver == 0 {
		ver = d.Version
	}
	v, err := p.registry.Get(ctx, name, ver)
	if err != nil {
		return err
	}
	m, err := model.Decode(v.Artifact)
	if err != nil {
		return err
	}
	if m.Config().Kind != flywheel.KindRanker {
		return fmt.Errorf("eval --explain explains a ranker's decisions; %s v%d is a %s", name, ver, m.Config().Kind)
	}
	out := &decisionExplanation{Model: name, EventID: eventID, LoggedBy: d.Version, Version: ver,
		ActionIDs: d.ActionIDs, Logged: d.Probabilities, Actions: m.ExplainScores(fctx, actions)}
	if d.ChosenIndex < len(d.ActionIDs) {
		out.Chosen = d.ActionIDs[d.ChosenIndex]
	}
	if asJSON {
		return printJSON(e.stdout, out)
	}
	w := e.stdout
	fmt.Fprintf(w, "%s %s: logged by v%d, chose %s; scored by v%d\n", name, eventID, d.Version, out.Chosen, ver)
	for i, as := range out.Actions {
		id, logged := "", 0.0
		if i < len(d.ActionIDs) {
			id = d.ActionIDs[i]
		}
		if i < len(d.Probabilities) {
			logged = d.Probabilities[i]
		}
		mark := " "
		if i == d.ChosenIndex {
			mark = "*"
		}
		fmt.Fprintf(w, "%s %-12s score %+.4f  probability %.4f (logged %.4f)\n", mark, id, as.Score, as.Probability, logged)
		for j, c := range as.Terms {
			if j == explainTerms {
				fmt.Fprintf(w, "      … %d more terms\n", len(as.Terms)-j)
				break
			}
			fmt.Fprintf(w, "      %+.4f = %+-9.4g × %-8.4g %s\n", c.Term, c.Weight, c.Value, c.Name)
		}
	}
	return nil
}
