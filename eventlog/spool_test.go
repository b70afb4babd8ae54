package eventlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func mustSpool(t *testing.T, dir string, seg int64) *Spool {
	t.Helper()
	s, err := OpenSpool(SpoolOptions{Dir: dir, SegmentBytes: seg})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readAll(t *testing.T, s *Spool, from Position) ([]Record, Position) {
	t.Helper()
	var out []Record
	for {
		recs, next, err := s.ReadFrom(from, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return out, from
		}
		out = append(out, recs...)
		from = next
	}
}

func TestSpoolOrderRollTornTailAndRelease(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := mustSpool(t, dir, 400) // tiny segments: many roll-overs
	for i := 0; i < 100; i++ {
		if _, err := s.Append([]Record{{Kind: KindDecision, Key: []byte(fmt.Sprint(i)), Value: []byte(strings.Repeat("v", i%17))}}, i%3 == 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append([]Record{{Kind: KindDecision}}, false); err != ErrSpoolClosed {
		t.Fatalf("append after close: %v", err)
	}
	// A torn record at the end, as a crash mid-write leaves it.
	segs, _ := s.segments()
	last := s.path(segs[len(segs)-1])
	f, _ := os.OpenFile(last, os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte{200, 0, 0, 0, 1, 2, 3})
	f.Close()

	s = mustSpool(t, dir, 400)
	defer s.Close()
	start, _ := s.LoadCursor()
	recs, end := readAll(t, s, start)
	if len(recs) != 100 {
		t.Fatalf("read %d records after reopening, want 100", len(recs))
	}
	for i, r := range recs {
		if string(r.Key) != fmt.Sprint(i) || len(r.Value) != i%17 {
			t.Fatalf("record %d is %q/%d bytes", i, r.Key, len(r.Value))
		}
	}
	if len(segs) < 5 {
		t.Fatalf("only %d segments for 100 records of 400-byte segments", len(segs))
	}
	if err := s.SaveCursor(end); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(end); err != nil {
		t.Fatal(err)
	}
	left, _ := s.segments()
	if len(left) != 1 || s.Pending(end) != 0 {
		t.Fatalf("after release: segments %v, pending %d", left, s.Pending(end))
	}
	if c, _ := s.LoadCursor(); c != end {
		t.Fatalf("cursor %v, saved %v", c, end)
	}
	if _, err := OpenSpool(SpoolOptions{Dir: dir}); err == nil {
		t.Fatal("a second process could open a spool in use")
	}
}

// The helper process appends durable records and prints each acknowledged
// key; the test kills it with SIGKILL mid-stream and checks that every
// acknowledged record is in the reopened spool.
func TestSpoolKill9LosesNothingAcknowledged(t *testing.T) {
	t.Parallel()
	if dir := os.Getenv("FLYWHEEL_SPOOL_HELPER_DIR"); dir != "" {
		s, err := OpenSpool(SpoolOptions{Dir: dir, SegmentBytes: 1 << 16})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		for i := 0; ; i++ {
			if _, err := s.Append([]Record{{Kind: KindFeedback, Key: []byte(strconv.Itoa(i)), Value: []byte(strings.Repeat("x", 300))}}, true); err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
			fmt.Println(i)
		}
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSpoolKill9LosesNothingAcknowledged$")
	cmd.Env = append(os.Environ(), "FLYWHEEL_SPOOL_HELPER_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 1<<20)
	chunk := make([]byte, 4096)
	for strings.Count(string(buf), "\n") < 2000 {
		n, err := out.Read(chunk)
		if err != nil {
			t.Fatalf("helper: %v (%s)", err, buf)
		}
		buf = append(buf, chunk[:n]...)
	}
	cmd.Process.Kill()
	cmd.Wait()
	lines := strings.Split(strings.TrimSpace(string(buf)), "\n")
	acked := 0
	for _, l := range lines[:len(lines)-1] { // the last line may be cut
		if _, err := strconv.Atoi(l); err == nil {
			acked++
		}
	}
	s := mustSpool(t, dir, 1<<16)
	defer s.Close()
	recs, _ := readAll(t, s, Position{Seg: 1})
	if len(recs) < acked {
		t.Fatalf("%d records acknowledged before kill -9, %d in the spool", acked, len(recs))
	}
	for i, r := range recs {
		if string(r.Key) != strconv.Itoa(i) {
			t.Fatalf("record %d has key %s", i, r.Key)
		}
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.spool"))
	t.Logf("kill -9 after %d acknowledged feedback records: %d in the spool (%d segments), 0 lost", acked, len(recs), len(segs))
}

// appendOld appends rec in the framing earlier versions wrote (u32 length,
// u32 CRC-32C of the body, body), which the spool still reads.
func appendOld(b []byte, rec Record) []byte {
	body := make([]byte, 5, 5+len(rec.Key)+len(rec.Value))
	body[0] = rec.Kind
	binary.LittleEndian.PutUint32(body[1:], uint32(len(rec.Key)))
	body = append(append(body, rec.Key...), rec.Value...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(body)))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(body, crcTable))
	return append(b, body...)
}

// extent is where one record lies in the spool.
type extent struct {
	seg, off, n int64
}

// mustFill writes n JSON records keyed 0..n-1 in segments of segBytes, in
// the current framing or (old) the earlier one, and returns where each lies.
func mustFill(t *testing.T, dir string, n int, segBytes int64, old bool) []extent {
	t.Helper()
	value := func(i int) []byte {
		return []byte(fmt.Sprintf(`{"event_id":"%d","pad":"%s"}`, i, strings.Repeat("p", 40+i%13)))
	}
	if old {
		var out []extent
		seg, b := int64(1), []byte(nil)
		for i := 0; i < n; i++ {
			if int64(len(b)) > segBytes {
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%012d.spool", seg)), b, 0o640); err != nil {
					t.Fatal(err)
				}
				seg, b = seg+1, nil
			}
			start := len(b)
			b = appendOld(b, Record{Kind: KindDecision, Key: []byte(strconv.Itoa(i)), Value: value(i)})
			out = append(out, extent{seg, int64(start), int64(len(b) - start)})
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%012d.spool", seg)), b, 0o640); err != nil {
			t.Fatal(err)
		}
		return out
	}
	s := mustSpool(t, dir, segBytes)
	defer s.Close()
	out := make([]extent, n)
	for i := range out {
		rec := Record{Kind: KindFeedback, Key: []byte(strconv.Itoa(i)), Value: value(i)}
		end, err := s.Append([]Record{rec}, false)
		if err != nil {
			t.Fatal(err)
		}
		size := int64(len(appendRecord(nil, rec)))
		out[i] = extent{end.Seg, end.Off - size, size}
	}
	return out
}

func mustPatch(t *testing.T, path string, off int64, f func(b []byte)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f(b[off:])
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

// A corrupt record anywhere is quarantined (a copy named by segment and
// offset), counted and skipped, and every valid record after it is read;
// a torn tail is cut off and copied aside; opening never fails.
func TestSpoolQuarantinesCorruptRecordsAndKeepsTheRest(t *testing.T) {
	t.Parallel()
	const n, segBytes = 60, 1200
	flip := func(b []byte) { b[0] ^= 0xFF }
	for _, tc := range []struct {
		name string
		old  bool
		// corrupt damages the spool and returns the keys lost with it
		corrupt     func(t *testing.T, dir string, at []extent) []int
		quarantined int64 // corrupt stretches
		tornFile    bool
	}{
		{name: "a byte of a body in an older segment", corrupt: func(t *testing.T, dir string, at []extent) []int {
			mustPatch(t, seg(dir, at[3].seg), at[3].off+at[3].n/2, flip)
			return []int{3}
		}, quarantined: 1},
		{name: "a length in an older segment", corrupt: func(t *testing.T, dir string, at []extent) []int {
			mustPatch(t, seg(dir, at[5].seg), at[5].off+5, func(b []byte) { b[0] = 0x7F }) // 2 GiB
			return []int{5}
		}, quarantined: 1},
		{name: "a byte in the middle of the last segment", corrupt: func(t *testing.T, dir string, at []extent) []int {
			k := lastSegMiddle(at)
			mustPatch(t, seg(dir, at[k].seg), at[k].off+at[k].n-3, flip)
			return []int{k}
		}, quarantined: 1},
		{name: "zeros over two records of an older segment", corrupt: func(t *testing.T, dir string, at []extent) []int {
			mustPatch(t, seg(dir, at[1].seg), at[1].off, func(b []byte) { clear(b[:at[1].n+at[2].n]) })
			return []int{1, 2}
		}, quarantined: 1},
		{name: "a false sync marker in a corrupt stretch", corrupt: func(t *testing.T, dir string, at []extent) []int {
			mustPatch(t, seg(dir, at[4].seg), at[4].off+headerBytes, func(b []byte) {
				copy(b, syncMarker[:])
				copy(b[4:], []byte{20, 0, 0, 0, 1, 2, 3, 4}) // a plausible length, a wrong checksum
			})
			return []int{4}
		}, quarantined: 1},
		{name: "an older segment and the last one", corrupt: func(t *testing.T, dir string, at []extent) []int {
			k := lastSegMiddle(at)
			mustPatch(t, seg(dir, at[2].seg), at[2].off+at[2].n/2, flip)
			mustPatch(t, seg(dir, at[k].seg), at[k].off+at[k].n/2, flip)
			return []int{2, k}
		}, quarantined: 2},
		{name: "a torn tail", corrupt: func(t *testing.T, dir string, at []extent) []int {
			f, err := os.OpenFile(seg(dir, at[n-1].seg), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.Write(appendRecord(nil, Record{Kind: KindDecision, Key: []byte("torn"), Value: []byte(`{"x":1}`)})[:15])
			return nil
		}, tornFile: true},
		{name: "older format: a byte of a body in an older segment", old: true, corrupt: func(t *testing.T, dir string, at []extent) []int {
			mustPatch(t, seg(dir, at[3].seg), at[3].off+at[3].n/2, flip)
			return []int{3}
		}, quarantined: 1},
		{name: "older format: the last segment cut at the first bad record before", old: true, corrupt: func(t *testing.T, dir string, at []extent) []int {
			k := lastSegMiddle(at)
			mustPatch(t, seg(dir, at[k].seg), at[k].off+2, flip) // its length
			return []int{k}
		}, quarantined: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			at := mustFill(t, dir, n, segBytes, tc.old)
			if at[n-1].seg < 3 {
				t.Fatalf("only %d segments", at[n-1].seg)
			}
			lost := map[int]bool{}
			for _, k := range tc.corrupt(t, dir, at) {
				lost[k] = true
			}
			s := mustSpool(t, dir, segBytes)
			defer s.Close()
			start, err := s.LoadCursor()
			if err != nil {
				t.Fatal(err)
			}
			recs, _ := readAll(t, s, start)
			var want []string
			for i := 0; i < n; i++ {
				if !lost[i] {
					want = append(want, strconv.Itoa(i))
				}
			}
			var got []string
			for _, r := range recs {
				got = append(got, string(r.Key))
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("read %d records %v,\nwant %d: %v", len(got), got, len(want), want)
			}
			// Reading again (a restart before the cursor moved) counts nothing twice.
			readAll(t, s, start)
			st := s.Stats()
			if st.Quarantined != tc.quarantined {
				t.Errorf("%d corrupt stretches quarantined, want %d", st.Quarantined, tc.quarantined)
			}
			files, _ := filepath.Glob(filepath.Join(dir, "quarantine", "*"))
			var corrupt, torn int
			var bytes int64
			for _, f := range files {
				fi, _ := os.Stat(f)
				switch {
				case strings.HasSuffix(f, ".corrupt"):
					corrupt++
					bytes += fi.Size()
				case strings.HasSuffix(f, ".torn"):
					torn++
					if fi.Size() != st.TornBytes {
						t.Errorf("torn copy of %d bytes, %d cut", fi.Size(), st.TornBytes)
					}
				}
			}
			if int64(corrupt) != tc.quarantined || bytes != st.QuarantinedBytes {
				t.Errorf("quarantine holds %v (%d bytes), stats %+v", files, bytes, st)
			}
			if tc.tornFile != (torn == 1) || tc.tornFile != (st.TornBytes == 15) {
				t.Errorf("torn tail: %d copies, %d bytes cut", torn, st.TornBytes)
			}
			// The spool goes on taking records after the damage.
			if _, err := s.Append([]Record{{Kind: KindDecision, Key: []byte("after"), Value: []byte(`{}`)}}, true); err != nil {
				t.Fatal(err)
			}
			if recs, _ := readAll(t, s, Position{Seg: s.End().Seg}); len(recs) == 0 || string(recs[len(recs)-1].Key) != "after" {
				t.Fatalf("the record appended after reopening is not read back: %d records", len(recs))
			}
			t.Logf("%d of %d records kept, %d lost with %d quarantined stretches (%d bytes), %d torn bytes cut", len(got), n, len(lost), st.Quarantined, st.QuarantinedBytes, st.TornBytes)
		})
	}
}

func seg(dir string, n int64) string { return filepath.Join(dir, fmt.Sprintf("%012d.spool", n)) }

// lastSegMiddle returns a record of the last segment with records of it
// after.
func lastSegMiddle(at []extent) int {
	last := at[len(at)-1].seg
	for i, e := range at {
		if e.seg == last {
			if i+2 >= len(at) {
				panic("the last segment holds fewer than 3 records")
			}
			return i + (len(at)-i)/2 - 1
		}
	}
	panic("unreachable")
}

// A failed write leaves whole records only and is not remembered: the
// next append that the disk takes succeeds, and Health says so. Appends
// past MaxBytes are refused with ErrSpoolFull until Release makes room;
// nothing written is dropped.
func TestSpoolCapRefusesAndReleaseMakesRoom(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := OpenSpool(SpoolOptions{Dir: dir, MaxBytes: 8 << 10, SegmentBytes: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rec := func(i int) []Record {
		return []Record{{Kind: KindDecision, Key: []byte(strconv.Itoa(i)), Value: []byte(`{"pad":"` + strings.Repeat("x", 100) + `"}`)}}
	}
	i := 0
	var err2 error
	for ; i < 1000; i++ {
		if _, err2 = s.Append(rec(i), i%2 == 0); err2 != nil {
			break
		}
	}
	if !errors.Is(err2, ErrSpoolFull) || !errors.Is(s.Health(), ErrSpoolFull) {
		t.Fatalf("after %d records: append %v, health %v; want ErrSpoolFull", i, err2, s.Health())
	}
	if st := s.Stats(); st.Bytes > 8<<10 || st.WriteErrors != 0 {
		t.Fatalf("stats at the cap: %+v", st)
	}
	acked := i
	recs, end := readAll(t, s, Position{Seg: 1})
	if len(recs) != acked {
		t.Fatalf("%d records in the spool, %d acknowledged", len(recs), acked)
	}
	if err := s.Release(end); err != nil {
		t.Fatal(err)
	}
	if err := s.Health(); err != nil {
		t.Fatalf("health after release: %v", err)
	}
	if _, err := s.Append(rec(i), true); err != nil {
		t.Fatalf("append after release: %v", err)
	}
}

// Appends that arrive together are written with fewer writes than appends
// (one per group), every record whole and each appender's in its order,
// across roll-overs; a position returned is at or after the record's end.
func TestSpoolGroupsConcurrentAppends(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := mustSpool(t, dir, 64<<10)
	const appenders, each = 32, 60
	start := make(chan struct{})
	errs := make(chan error, appenders)
	var wg sync.WaitGroup
	for g := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			last := Position{}
			for i := range each {
				durable := g == 0 && i%10 == 0 // durable ones in the groups too
				p, err := s.Append([]Record{{Kind: KindDecision, Key: fmt.Appendf(nil, "%d-%d", g, i), Value: []byte(strings.Repeat("x", 100+g))}}, durable)
				if err != nil {
					errs <- err
					return
				}
				if !last.less(p) {
					errs <- fmt.Errorf("appender %d: position %v after %v", g, p, last)
					return
				}
				last = p
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := s.Stats()
	t.Logf("%d appends in %d writes", st.Appends, st.Writes)
	if st.Appends != appenders*each || st.Writes >= st.Appends {
		t.Fatalf("%d appends in %d writes, want %d in fewer", st.Appends, st.Writes, appenders*each)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustSpool(t, dir, 64<<10)
	defer s.Close()
	from, _ := s.LoadCursor()
	recs, _ := readAll(t, s, from)
	next := make([]int, appenders)
	for _, r := range recs {
		var g, i int
		if _, err := fmt.Sscanf(string(r.Key), "%d-%d", &g, &i); err != nil || g < 0 || g >= appenders {
			t.Fatalf("record key %q", r.Key)
		}
		if i != next[g] || len(r.Value) != 100+g {
			t.Fatalf("appender %d: record %d (%d bytes) where %d was due", g, i, len(r.Value), next[g])
		}
		next[g]++
	}
	for g, n := range next {
		if n != each {
			t.Fatalf("appender %d: %d records read back, want %d", g, n, each)
		}
	}
}
