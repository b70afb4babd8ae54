// Package retrain is where the flywheel turns: on each model's cron schedule
// it reads the examples whose reward is known from ClickHouse, trains a
// candidate, evaluates it against the live champion on a later holdout of the
// logged data with off-policy estimators (the probabilities serving logged
// make this fair), registers it, and promotes it by the promotion rule
// (Decide): by default when it is not worse than the champion, nor than the
// last version shown better, beyond a margin; on a holdout of multi-slot
// pages, the rule judges the page and no slot may be clearly worse
// (slots.go, CheckSlots). A candidate is trained in full
// (from zero, over the window) or, with retrain.incremental, goes on from the
// champion's weights and optimizer state over the decisions after the
// champion's cutoff (incremental.go); Reproduce rebuilds either bit for bit.
package retrain
