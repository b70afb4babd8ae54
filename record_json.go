package flywheel

import (
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends r's JSON to b: the bytes json.Marshal gives for r, up
// to how strings are escaped (<, > and & are written as they are), in one
// pass with no reflection. The event logger writes every decision with it.
// It fails on a number JSON cannot hold (NaN, ±Inf) or a time outside the
// years 0 to 9999, as json.Marshal does.
func (r *DecisionRecord) AppendJSON(b []byte) ([]byte, error) {
	if r.Time.Year() < 0 || r.Time.Year() > 9999 {
		return b, fmt.Errorf("decision %s: ts %v is outside the years JSON's time format holds", r.EventID, r.Time)
	}
	for _, p := range r.Probabilities {
		if math.IsNaN(p) || math.IsInf(p, 0) {
			return b, fmt.Errorf("decision %s: a probability is %v", r.EventID, p)
		}
	}
	if math.IsNaN(r.Score) || math.IsInf(r.Score, 0) || math.IsNaN(r.Reward.Default) || math.IsInf(r.Reward.Default, 0) {
		return b, fmt.Errorf("decision %s: score %v or reward default %v is not a finite number", r.EventID, r.Score, r.Reward.Default)
	}
	b = append(b, `{"schema":`...)
	b = strconv.AppendInt(b, int64(r.Schema), 10)
	b = append(b, `,"event_id":`...)
	b = AppendJSONString(b, r.EventID)
	b = append(b, `,"ts":"`...)
	b = r.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","model":`...)
	b = AppendJSONString(b, r.Model)
	b = append(b, `,"kind":`...)
	b = AppendJSONString(b, r.Kind)
	b = append(b, `,"model_version":`...)
	b = strconv.AppendInt(b, int64(r.Version), 10)
	b = append(b, `,"variant":`...)
	b = AppendJSONString(b, r.Variant)
	b = append(b, `,"context":`...)
	if len(r.Context) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, r.Context...)
	}
	if len(r.Actions) > 0 {
		b = append(b, `,"actions":[`...)
		for i, a := range r.Actions {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"id":`...)
			b = AppendJSONString(b, a.ID)
			if len(a.Features) > 0 {
				b = append(b, `,"features":`...)
				b = append(b, a.Features...)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if len(r.Probabilities) > 0 {
		b = append(b, `,"probabilities":`...)
		if r.RawProbabilities != nil {
			b = append(b, r.RawProbabilities...)
		} else {
			b, _ = AppendJSONFloats(b, r.Probabilities, nil)
		}
	}
	if len(r.Ranking) > 0 {
		b = append(b, `,"ranking":[`...)
		for i, id := range r.Ranking {
			if i > 0 {
				b = append(b, ',')
			}
			b = AppendJSONString(b, id)
		}
		b = append(b, ']')
	}
	b = append(b, `,"chosen_index":`...)
	b = strconv.AppendInt(b, int64(r.ChosenIndex), 10)
	if r.Chosen != "" {
		b = append(b, `,"chosen":`...)
		b = AppendJSONString(b, r.Chosen)
	}
	b = append(b, `,"explored":`...)
	b = strconv.AppendBool(b, r.Explored)
	if r.Score != 0 {
		b = append(b, `,"score":`...)
		b = AppendJSONFloat(b, r.Score)
	}
	b = append(b, `,"reward":{"window_s":`...)
	b = strconv.AppendInt(b, r.Reward.WindowSeconds, 10)
	b = append(b, `,"default":`...)
	b = AppendJSONFloat(b, r.Reward.Default)
	b = append(b, `,"aggregate":`...)
	b = AppendJSONString(b, r.Reward.Aggregate)
	if r.Reward.LateWindowSeconds != 0 {
		b = append(b, `,"late_window_s":`...)
		b = strconv.AppendInt(b, r.Reward.LateWindowSeconds, 10)
	}
	b = append(b, '}')
	if r.Deferred {
		b = append(b, `,"deferred":true`...)
	}
	if r.ServerID {
		b = append(b, `,"server_id":true`...)
	}
	return append(b, '}'), nil
}

// AppendJSONFloats appends xs as a JSON array of AppendJSONFloat's numbers,
// and appends to ends, for each number, its end's offset in the returned
// slice: number i is b[ends[i-1]+1:ends[i]] (b[start+1:ends[0]] for the
// first, start being len(b) on entry).
func AppendJSONFloats(b []byte, xs []float64, ends []int) ([]byte, []int) {
	b = append(b, '[')
	for i, x := range xs {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendJSONFloat(b, x)
		ends = append(ends, len(b))
	}
	return append(b, ']'), ends
}

// AppendJSONFloat appends f formatted as encoding/json formats it: the shortest form that
// reads back as f, with an exponent only for very small or large numbers.
func AppendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' { // e-07 → e-7, as encoding/json writes it
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// AppendJSONString appends s quoted: quotes, backslashes and control
// characters escaped, as are U+2028 and U+2029; invalid UTF-8 becomes
// U+FFFD, as encoding/json makes it.
func AppendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
