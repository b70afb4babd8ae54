// Package model is Flywheel's learner: feature hashing with namespaces and
// quadratic interactions, a contextual-bandit ranker whose exploration policies
// (epsilon-greedy, softmax, SquareCB) report the exact probability of every
// action, a logistic classifier, adaptive per-coordinate training, and a
// versioned binary encoding with a checksum.
//
// A *Model is immutable once built and safe for concurrent use by any number
// of goroutines; a *Trainer owns a model while it learns. The package does no
// I/O.
package model
