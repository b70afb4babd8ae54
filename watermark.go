package flywheel

import "time"

// SpoolWatermark is a serving process's claim that every event it logged
// (decision or feedback) timed before Through was in Kafka at Sent (its
// spool had shipped them). Serving writes one to the spool watermark topic
// every second or so, as a SpoolWatermarkRecord keyed by Source; ingest
// keeps decisions open behind the oldest claim of the live serving
// processes, so that feedback still in a spool is never taken for the
// default reward, and a decision still in one never closes before it is in.
type SpoolWatermark struct {
	Source  string    `json:"source"` // one per spool directory, kept across restarts
	Through time.Time `json:"through"`
	Sent    time.Time `json:"sent"`
}

// SpoolWatermarkRecord is a SpoolWatermark as logged in the feedback topic.
// Its JSON starts with SpoolWatermarkPrefix (the field comes first), which
// no feedback record does, so ingest tells the two apart by the first bytes.
type SpoolWatermarkRecord struct {
	Watermark SpoolWatermark `json:"spool_watermark"`
	Schema    int            `json:"schema"`
}

// SpoolWatermarkPrefix starts the JSON of every SpoolWatermarkRecord.
const SpoolWatermarkPrefix = `{"spool_watermark":`

// Validate checks a spool watermark read back from the log.
func (w *SpoolWatermark) Validate() error {
	switch {
	case w.Source == "":
		return Errorf(EINVALID, "spool_watermark.source is empty")
	case w.Through.IsZero() || w.Sent.IsZero():
		return Errorf(EINVALID, "spool_watermark.through or sent is missing")
	case w.Through.After(w.Sent):
		return Errorf(EINVALID, "spool_watermark.through is after sent")
	}
	return nil
}
