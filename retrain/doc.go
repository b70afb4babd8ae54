// Package retrain is where the flywheel turns: on each model's cron schedule
// it reads the examples whose reward is known from ClickHouse, trains a
// candidate, evaluates it against the live champion on a later holdout of the
// logged data with off-policy estimators (the probabilities serving logged
// make this fair), registers it, and promotes it when it is better.
package retrain
