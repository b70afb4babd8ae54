// Package deploy owns which version of each model serves: the registry of
// immutable numbered versions in ClickHouse (artifact, sha256, manifest,
// metrics), aliases such as champion whose every move is recorded with who,
// when and why, promotion and rollback, and the model events on Kafka that
// tell every serving replica to move.
package deploy
