// Command learner is the Flywheel side of the learner benchmark (make bench):
// it replays a bandit data set progressively through model/ — for each
// example the policy gives its probabilities, an action is drawn with the
// example's own uniform number, its reward is revealed, and the learner
// learns from that alone — and prints examples per second and progressive
// reward as JSON. vw.py runs Vowpal Wabbit through the same protocol on the
// same file. With -gen-sim it writes the simulator's data set instead, of
// the world -world names.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"github.com/bytedance/sonic"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
	"github.com/flywheel-dev/flywheel/sim"
)

// Row is one line of a data set: a context, the actions, the reward each
// action would get, and the uniform number that draws the action.
type Row struct {
	Context flywheel.Features `json:"context"`
	Actions []flywheel.Action `json:"actions"`
	Rewards []float64         `json:"rewards"`
	U       float64           `json:"u"`
	// Truth is each action's expected reward (the simulator's click
	// probability), from which Rewards were drawn.
	Truth []float64 `json:"truth,omitempty"`
}

// Result is one learner's figures on one data set.
type Result struct {
	Learner           string  `json:"learner"`
	Data              string  `json:"data"`
	Examples          int     `json:"examples"`
	Seconds           float64 `json:"seconds"`
	ExamplesPerSecond float64 `json:"examples_per_second"`
	ProgressiveReward float64 `json:"progressive_reward"`
	Mode              string  `json:"mode"`
}

func main() {
	data := flag.String("data", "", "data set (JSON lines)")
	name := flag.String("name", "", "data set name for the report")
	bits := flag.Int("bits", 18, "hash bits")
	epsilon := flag.Float64("epsilon", 0.05, "epsilon-greedy exploration")
	ctxNS := flag.String("ctx-ns", "user", "context namespace to cross")
	actNS := flag.String("act-ns", "item", "action namespace to cross")
	objective := flag.String("objective", model.MTR, "mtr | ips | dr")
	lr := flag.Float64("lr", 0, "learning rate (0: default)")
	maxIW := flag.Float64("max-iw", 0, "importance weight clip (0: default)")
	decode := flag.Bool("decode-in-loop", false, "decode each example's JSON inside the timed loop")
	genSim := flag.Int("gen-sim", 0, "write this many simulator rows to -data and exit")
	world := flag.String("world", sim.Default, "the simulator's world for -gen-sim: "+strings.Join(sim.Worlds(), ", "))
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the run here")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	if *genSim > 0 {
		if err := writeSim(*data, *world, *genSim); err != nil {
			fmt.Fprintln(os.Stderr, "learner:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*data, *name, *bits, *epsilon, *ctxNS, *actNS, *objective, *lr, *maxIW, *decode); err != nil {
		fmt.Fprintln(os.Stderr, "learner:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// requestJSON decodes as serving's strictJSON does (copied strings,
// validated UTF-8).
var requestJSON = sonic.Config{CopyString: true, ValidateString: true}.Froze()

func run(path, name string, bits int, epsilon float64, ctxNS, actNS, objective string, lr, maxIW float64, decodeInLoop bool) error {
	rows, raw, err := load(path)
	if err != nil {
		return err
	}
	mode, next := "interactive, in process", func(i int) (*Row, error) { return &rows[i], nil }
	if decodeInLoop {
		// As VW parses each example's text inside its loop, with the JSON
		// decoder serving uses on each request (serve/handlers.go).
		mode, next = "interactive, in process, each example's JSON decoded in the loop", func(i int) (*Row, error) {
			var row Row
			return &row, requestJSON.Unmarshal(raw[i], &row)
		}
	}
	m, err := model.New(model.Config{Kind: flywheel.KindRanker, Bits: bits, Interactions: [][2]string{{ctxNS, actNS}},
		Exploration: flywheel.Exploration{Policy: flywheel.EpsilonGreedy, Epsilon: epsilon}})
	if err != nil {
		return err
	}
	tr := model.NewTrainer(m, model.TrainConfig{Objective: objective, LearningRate: lr, MaxImportanceWeight: maxIW})
	var r model.Ranking
	ex := flywheel.Example{}
	total := 0.0
	runtime.GC() // the data set's garbage is not the learner's to collect
	start := time.Now()
	for i := range rows {
		row, err := next(i)
		if err != nil {
			return err
		}
		tr.Model().Policy(row.Context, row.Actions, &r)
		a := draw(r.Probabilities, row.U)
		total += row.Rewards[a]
		ex.Context, ex.Actions, ex.Probabilities, ex.ChosenIndex, ex.Reward = row.Context, row.Actions, r.Probabilities, a, row.Rewards[a]
		if err := tr.LearnRanker(&ex); err != nil {
			return err
		}
	}
	secs := time.Since(start).Seconds()
	return json.NewEncoder(os.Stdout).Encode(Result{Learner: "flywheel", Data: name, Examples: len(rows), Seconds: secs,
		ExamplesPerSecond: float64(len(rows)) / secs, ProgressiveReward: total / float64(len(rows)), Mode: mode})
}

func draw(p []float64, u float64) int {
	acc := 0.0
	for i, x := range p {
		acc += x
		if u < acc {
			return i
		}
	}
	return len(p) - 1
}

func load(path string) ([]Row, [][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	var rows []Row
	var raw [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var r Row
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, nil, fmt.Errorf("%s line %d: %w", path, len(rows)+1, err)
		}
		rows = append(rows, r)
		raw = append(raw, append([]byte(nil), sc.Bytes()...))
	}
	return rows, raw, sc.Err()
}

// writeSim writes n rows from the simulator's world (seed 1, as `flywheel
// sim` plays it): each action's reward is drawn once from its truth, so both
// learners see the same outcome for the same choice, and the truth is kept
// for expected rewards.
func writeSim(path, worldName string, n int) error {
	world, err := sim.NewEnv(worldName, 1)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	rng := rand.New(rand.NewPCG(42, 1))
	enc := json.NewEncoder(w)
	for i := 0; i < n; i++ {
		ctx, actions, truth := world.Draw(rng)
		row := Row{Context: ctx, Actions: actions, Truth: truth, U: rng.Float64()}
		for _, p := range truth {
			r := 0.0
			if rng.Float64() < p {
				r = 1
			}
			row.Rewards = append(row.Rewards, r)
		}
		if err := enc.Encode(row); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}
