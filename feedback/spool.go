package feedback

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Record kinds in the spool.
const (
	KindDecision byte = 1
	KindFeedback byte = 2
)

// Record is one event in the spool.
type Record struct {
	Kind  byte
	Key   []byte
	Value []byte
}

// Position is a place in the spool: a segment number and a byte offset.
type Position struct {
	Seg int64
	Off int64
}

func (p Position) less(q Position) bool { return p.Seg < q.Seg || p.Seg == q.Seg && p.Off < q.Off }

// Spool is a local append-only log of events on disk: the write-ahead log
// every decision and feedback event passes through on its way to Kafka, so
// that serving never waits for Kafka and nothing acknowledged is lost when
// Kafka is slow or down or the process is killed.
//
// Records are framed as u32 length, u32 CRC-32C of the body, then the body
// (kind, u32 key length, key, value). Appends are serialised; fsync is
// group-committed: one fsync covers every record written before it, and
// callers that need durability wait for the fsync that covers them. A torn
// record at the end of the last segment (a crash mid-write) is cut off when
// the spool is opened. Segments roll over at SegmentBytes; Release deletes
// segments wholly before a position. One process at a time may open a
// directory (an exclusive flock). Spool is safe for concurrent use.
type Spool struct {
	dir          string
	segmentBytes int64
	lock         *os.File

	mu      sync.Mutex // guards the fields below and writes to f
	f       *os.File
	end     Position // where the next record goes
	durable Position // everything before it is fsynced
	syncing bool
	later   bool       // a lazy sync of non-durable appends is scheduled
	cond    *sync.Cond // signalled when durable moves or a sync ends
	err     error      // sticky write or sync error
	closed  bool
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrSpoolClosed is returned by Append after Close.
var ErrSpoolClosed = errors.New("spool is closed")

// OpenSpool opens (creating if needed) the spool in dir. segmentBytes <= 0
// means 64 MiB.
func OpenSpool(dir string, segmentBytes int64) (*Spool, error) {
	if segmentBytes <= 0 {
		segmentBytes = 64 << 20
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("spool %s is in use by another process: %w", dir, err)
	}
	s := &Spool{dir: dir, segmentBytes: segmentBytes, lock: lock}
	s.cond = sync.NewCond(&s.mu)
	segs, err := s.segments()
	if err != nil {
		lock.Close()
		return nil, err
	}
	last := int64(1)
	if len(segs) > 0 {
		last = segs[len(segs)-1]
	}
	// Cut a torn tail off the last segment.
	valid, err := scanValid(s.path(last))
	if err != nil {
		lock.Close()
		return nil, err
	}
	f, err := os.OpenFile(s.path(last), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("open spool segment: %w", err)
	}
	if err := f.Truncate(valid); err != nil {
		f.Close()
		lock.Close()
		return nil, fmt.Errorf("truncate torn spool tail: %w", err)
	}
	if _, err := f.Seek(valid, io.SeekStart); err != nil {
		f.Close()
		lock.Close()
		return nil, err
	}
	s.f = f
	s.end = Position{last, valid}
	s.durable = s.end
	return s, nil
}

func (s *Spool) path(seg int64) string { return filepath.Join(s.dir, fmt.Sprintf("%012d.spool", seg)) }

// segments lists the segment numbers present, ascending.
func (s *Spool) segments() ([]int64, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list spool: %w", err)
	}
	var out []int64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".spool")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(name, 10, 64)
		if err == nil {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// scanValid returns the length of the prefix of the file made of whole,
// checksummed records (0 if the file does not exist).
func scanValid(path string) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var off int64
	for {
		_, n, err := readRecord(r)
		if err != nil {
			return off, nil // EOF or a torn/corrupt record: the valid prefix ends here
		}
		off += n
	}
}

func encodeRecord(rec Record) []byte {
	body := 1 + 4 + len(rec.Key) + len(rec.Value)
	b := make([]byte, 8+body)
	binary.LittleEndian.PutUint32(b[0:], uint32(body))
	b[8] = rec.Kind
	binary.LittleEndian.PutUint32(b[9:], uint32(len(rec.Key)))
	copy(b[13:], rec.Key)
	copy(b[13+len(rec.Key):], rec.Value)
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[8:], crcTable))
	return b
}

// readRecord reads one record; n is its size on disk.
func readRecord(r io.Reader) (Record, int64, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Record{}, 0, err
	}
	size := binary.LittleEndian.Uint32(hdr[0:])
	if size < 5 || size > 64<<20 {
		return Record{}, 0, fmt.Errorf("spool record of %d bytes: corrupt", size)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(r, body); err != nil {
		return Record{}, 0, io.ErrUnexpectedEOF
	}
	if crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(hdr[4:]) {
		return Record{}, 0, errors.New("spool record checksum mismatch")
	}
	kl := binary.LittleEndian.Uint32(body[1:])
	if uint64(kl) > uint64(size-5) {
		return Record{}, 0, errors.New("spool record key length out of range")
	}
	return Record{Kind: body[0], Key: body[5 : 5+kl], Value: body[5+kl:]}, int64(8 + size), nil
}

// lazySync is how soon appends that did not ask to be durable are fsynced:
// fsyncing after every burst of decisions costs serving a tenth of its CPU
// under load, and a machine crash is what this delay can lose.
const lazySync = 50 * time.Millisecond

// Append writes recs to the spool, in order, and returns the position after
// them. With durable set it returns only once they are fsynced; without, once
// they are written to the operating system (a process crash loses nothing;
// a machine crash may lose what was not yet synced, which the next group
// commit covers within lazySync). It returns an error if the
// disk refused them: then none of them may be assumed spooled.
func (s *Spool) Append(recs []Record, durable bool) (Position, error) {
	var buf []byte
	for _, r := range recs {
		buf = append(buf, encodeRecord(r)...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Position{}, ErrSpoolClosed
	}
	if s.err != nil {
		return Position{}, s.err
	}
	if s.end.Off > 0 && s.end.Off+int64(len(buf)) > s.segmentBytes {
		if err := s.rollLocked(); err != nil {
			return Position{}, err
		}
	}
	if _, err := s.f.Write(buf); err != nil {
		s.err = fmt.Errorf("spool write: %w", err)
		return Position{}, s.err
	}
	s.end.Off += int64(len(buf))
	end := s.end
	if !durable {
		s.kickLaterLocked()
		return end, nil
	}
	for s.durable.less(end) && s.err == nil {
		s.kickLocked()
		s.cond.Wait()
	}
	return end, s.err
}

// kickLocked starts a group commit unless one is running; the one running
// loops until everything written is durable.
func (s *Spool) kickLocked() {
	if s.syncing {
		return
	}
	s.syncing = true
	go s.syncLoop()
}

// Sync makes everything appended so far durable before it returns.
func (s *Spool) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.durable.less(s.end) && s.err == nil && !s.closed {
		s.kickLocked()
		s.cond.Wait()
	}
	return s.err
}

// kickLaterLocked schedules a group commit lazySync from now unless one is
// running or scheduled.
func (s *Spool) kickLaterLocked() {
	if s.syncing || s.later {
		return
	}
	s.later = true
	time.AfterFunc(lazySync, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.later = false
		if !s.closed && s.durable.less(s.end) {
			s.kickLocked()
		}
	})
}

func (s *Spool) syncLoop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.durable.less(s.end) && s.err == nil && !s.closed {
		target, f := s.end, s.f
		s.mu.Unlock()
		err := f.Sync()
		s.mu.Lock()
		if err != nil {
			s.err = fmt.Errorf("spool fsync: %w", err)
		} else if s.durable.less(target) {
			s.durable = target
		}
		s.cond.Broadcast()
	}
	s.syncing = false
	s.cond.Broadcast()
}

// rollLocked syncs and closes the current segment and starts the next.
func (s *Spool) rollLocked() error {
	for s.syncing { // let a running group commit finish with the old file
		s.cond.Wait()
	}
	if err := s.f.Sync(); err != nil {
		s.err = fmt.Errorf("spool fsync: %w", err)
		return s.err
	}
	s.durable = s.end
	s.cond.Broadcast()
	next := s.end.Seg + 1
	f, err := os.OpenFile(s.path(next), os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o640)
	if err != nil {
		s.err = fmt.Errorf("new spool segment: %w", err)
		return s.err
	}
	s.f.Close()
	s.f = f
	s.end = Position{next, 0}
	s.durable = s.end
	return nil
}

// Durable returns the position before which everything is fsynced.
func (s *Spool) Durable() Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.durable
}

// End returns the position after the last record written.
func (s *Spool) End() Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.end
}

// Release deletes every segment wholly before p: its records are in Kafka.
func (s *Spool) Release(p Position) error {
	segs, err := s.segments()
	if err != nil {
		return err
	}
	for _, seg := range segs {
		if seg >= p.Seg {
			break
		}
		if err := os.Remove(s.path(seg)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("release spool segment %d: %w", seg, err)
		}
	}
	return nil
}

// Pending returns the bytes between p and the end of the spool.
func (s *Spool) Pending(p Position) int64 {
	end := s.End()
	if end.Seg == p.Seg {
		return end.Off - p.Off
	}
	var n int64
	segs, _ := s.segments()
	for _, seg := range segs {
		if seg < p.Seg {
			continue
		}
		if fi, err := os.Stat(s.path(seg)); err == nil {
			n += fi.Size()
		}
		if seg == p.Seg {
			n -= p.Off
		}
	}
	return n
}

// ReadFrom reads the durable records from p on, at most max of them, and
// returns them with the position after the last one. At the end of a segment
// that is no longer written it moves on to the next one.
func (s *Spool) ReadFrom(p Position, max int) ([]Record, Position, error) {
	durable := s.Durable()
	for {
		if !p.less(durable) {
			return nil, p, nil
		}
		f, err := os.Open(s.path(p.Seg))
		if errors.Is(err, os.ErrNotExist) && p.Seg < durable.Seg {
			p = Position{p.Seg + 1, 0}
			continue
		} else if err != nil {
			return nil, p, fmt.Errorf("open spool segment %d: %w", p.Seg, err)
		}
		limit := int64(1 << 62)
		if p.Seg == durable.Seg {
			limit = durable.Off
		}
		recs, next, err := readSegment(f, p, limit, max)
		f.Close()
		if err != nil {
			return nil, p, err
		}
		if len(recs) == 0 && p.Seg < durable.Seg {
			p = Position{p.Seg + 1, 0} // this segment is finished
			continue
		}
		return recs, next, nil
	}
}

func readSegment(f *os.File, p Position, limit int64, max int) ([]Record, Position, error) {
	if _, err := f.Seek(p.Off, io.SeekStart); err != nil {
		return nil, p, err
	}
	r := bufio.NewReaderSize(f, 64<<10)
	var recs []Record
	for len(recs) < max && p.Off < limit {
		rec, n, err := readRecord(r)
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, p, fmt.Errorf("spool segment %d at %d: %w", p.Seg, p.Off, err)
		}
		recs = append(recs, rec)
		p.Off += n
	}
	return recs, p, nil
}

// Cursor persistence: the position up to which records are in Kafka.

func (s *Spool) cursorPath() string { return filepath.Join(s.dir, "CURSOR") }

// LoadCursor returns the saved shipping position, or the start of the
// oldest segment.
func (s *Spool) LoadCursor() (Position, error) {
	b, err := os.ReadFile(s.cursorPath())
	if errors.Is(err, os.ErrNotExist) {
		segs, err := s.segments()
		if err != nil || len(segs) == 0 {
			return Position{Seg: s.End().Seg}, err
		}
		return Position{Seg: segs[0]}, nil
	} else if err != nil {
		return Position{}, fmt.Errorf("read spool cursor: %w", err)
	}
	var p Position
	if _, err := fmt.Sscanf(string(b), "%d %d", &p.Seg, &p.Off); err != nil {
		return Position{}, fmt.Errorf("spool cursor %q: %w", b, err)
	}
	return p, nil
}

// SaveCursor records that everything before p is in Kafka (write to a
// temporary file, fsync, rename).
func (s *Spool) SaveCursor(p Position) error {
	tmp := s.cursorPath() + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("save spool cursor: %w", err)
	}
	if _, err := fmt.Fprintf(f, "%d %d\n", p.Seg, p.Off); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("save spool cursor: %w", err)
	}
	return os.Rename(tmp, s.cursorPath())
}

// Close syncs and closes the spool and releases the directory lock.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	for s.syncing {
		s.cond.Wait()
	}
	s.closed = true
	err := s.f.Sync()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	s.durable = s.end
	s.cond.Broadcast()
	s.lock.Close()
	return err
}
