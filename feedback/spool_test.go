package feedback

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func mustSpool(t *testing.T, dir string, seg int64) *Spool {
	t.Helper()
	s, err := OpenSpool(dir, seg)
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
	if _, err := OpenSpool(dir, 0); err == nil {
		t.Fatal("a second process could open a spool in use")
	}
}

// The helper process appends durable records and prints each acknowledged
// key; the test kills it with SIGKILL mid-stream and checks that every
// acknowledged record is in the reopened spool.
func TestSpoolKill9LosesNothingAcknowledged(t *testing.T) {
	t.Parallel()
	if dir := os.Getenv("FLYWHEEL_SPOOL_HELPER_DIR"); dir != "" {
		s, err := OpenSpool(dir, 1<<16)
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
