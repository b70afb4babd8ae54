package eventlog

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
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

// DefaultSpoolMaxBytes is the spool's size cap when none is configured.
const DefaultSpoolMaxBytes int64 = 1 << 30

// SpoolOptions configure OpenSpool.
type SpoolOptions struct {
	// Dir is the spool's directory, created if needed.
	Dir string
	// MaxBytes caps the bytes of the segment files on disk (shipped records
	// count until their segment is released): Append refuses records that
	// would pass it with ErrSpoolFull and never drops records to make room.
	// 0 means DefaultSpoolMaxBytes.
	MaxBytes int64
	// SegmentBytes is the size at which a segment rolls over; 0 means a
	// sixteenth of MaxBytes, between 4 KiB and 64 MiB.
	SegmentBytes int64
	// Log gets a line for every torn tail cut and every corrupt stretch
	// quarantined; nil discards.
	Log *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// WatermarkInterval is how often a Logger over the spool sends its
	// spool watermark; 0 means DefaultWatermarkInterval.
	WatermarkInterval time.Duration
}

// SpoolStats are a spool's counters since it was opened.
type SpoolStats struct {
	Bytes            int64 // in segment files on disk: what MaxBytes caps
	WriteErrors      int64 // writes and fsyncs that failed
	Appends          int64 // Append calls the spool took
	Writes           int64 // writes of appends to segment files: a group of appends is one
	Quarantined      int64 // corrupt stretches of a segment moved aside
	QuarantinedBytes int64
	TornBytes        int64 // cut off the end of the last segment at open
}

// Spool is a local append-only log of events on disk: the write-ahead log
// every decision and feedback event passes through on its way to Kafka, so
// that serving never waits for Kafka and nothing acknowledged is lost when
// Kafka is slow or down or the process is killed.
//
// A record is a sync marker (4 bytes, never a valid length of the older
// format), u32 length, u32 CRC-32C of the length and the body, then the body
// (kind, u32 key length, key, value). Records of the older format (u32
// length, u32 CRC-32C of the body, body), which earlier versions wrote, are
// read as well. Appends are serialised; fsync is group-committed: one fsync
// covers every record written before it, and callers that need durability
// wait for the fsync that covers them.
//
// A failed write is cut back off the segment and reported to its caller
// only: the next append tries again (Health reports the failure until one
// succeeds). When the spool is opened, a torn record at the end of the last
// segment (a crash mid-write) is copied into the quarantine directory and
// cut off, with a log line. A corrupt stretch anywhere else is copied into
// the quarantine directory (named by segment and offset), counted and logged
// when reading reaches it, and reading goes on at the next valid record: the
// sync marker and the checksums find it.
//
// Segments roll over at SegmentBytes; Release deletes segments wholly before
// a position. One process at a time may open a directory (an exclusive
// flock). Spool is safe for concurrent use.
type Spool struct {
	dir          string
	segmentBytes int64
	maxBytes     int64
	lock         *os.File
	log          *slog.Logger
	now          func() time.Time

	mu        sync.Mutex // guards the fields below and writes to f
	group     *group     // the appends gathering for one write, nil when none
	f         *os.File
	end       Position // where the next record goes
	durable   Position // everything before it is fsynced
	size      int64    // bytes in segment files
	syncing   bool
	later     bool       // a lazy sync of non-durable appends is scheduled
	cond      *sync.Cond // signalled when durable moves or a sync ends
	closed    bool
	truncate  bool   // a failed write left bytes after end: cut them before the next write
	syncFails uint64 // failed fsyncs so far: a durable Append that waited across one fails
	syncErr   error  // the last failed fsync
	failErr   error  // the last failed write or fsync; nil once a write succeeds again
	failBytes int    // the size of that write
	failAt    time.Time
	full      bool  // the last Append was refused by maxBytes
	fullBytes int64 // and needed this much room
	stats     SpoolStats
	seen      map[Position]bool // corrupt stretches quarantined by this process

	probing sync.Mutex // one disk probe at a time
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// syncMarker starts every record written by this version. Read as the
// older format's little-endian length it is more than maxRecordBytes, so a
// record of either format is recognised by its first four bytes; it holds
// 0xFE and 0xFF, which JSON text (the values) never does.
var syncMarker = [4]byte{0xFE, 'F', 'W', 0xFF}

const (
	maxRecordBytes = 64 << 20
	headerBytes    = 12 // marker, length, checksum
	oldHeaderBytes = 8  // length, checksum
	maxOldKeyBytes = 1024
)

// ErrSpoolClosed is returned by Append after Close.
var ErrSpoolClosed = errors.New("spool is closed")

// ErrSpoolFull is wrapped by the errors of Append and Health when the spool
// is at its MaxBytes or its disk is full.
var ErrSpoolFull = errors.New("spool is full")

// errBadRecord marks a record that is torn or corrupt (as opposed to an I/O
// error reading it).
var errBadRecord = errors.New("bad spool record")

// OpenSpool opens (creating if needed) the spool in o.Dir, cutting a torn
// record off the end of its last segment. It returns an error if the
// directory cannot be used or another process holds it.
func OpenSpool(o SpoolOptions) (*Spool, error) {
	if o.Dir == "" {
		return nil, errors.New("spool directory is empty")
	}
	if o.MaxBytes < 0 || o.SegmentBytes < 0 {
		return nil, fmt.Errorf("spool sizes must not be negative (max bytes %d, segment bytes %d)", o.MaxBytes, o.SegmentBytes)
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultSpoolMaxBytes
	}
	if o.SegmentBytes == 0 {
		o.SegmentBytes = min(max(o.MaxBytes/16, 4<<10), 64<<20)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	dir := o.Dir
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
	s := &Spool{dir: dir, segmentBytes: o.SegmentBytes, maxBytes: o.MaxBytes, lock: lock, log: o.Log, now: o.Now, seen: map[Position]bool{}}
	s.cond = sync.NewCond(&s.mu)
	fail := func(err error) (*Spool, error) {
		lock.Close()
		return nil, err
	}
	segs, err := s.segments()
	if err != nil {
		return fail(err)
	}
	last := int64(1)
	if len(segs) > 0 {
		last = segs[len(segs)-1]
	}
	end, err := s.recoverTail(last)
	if err != nil {
		return fail(err)
	}
	f, err := os.OpenFile(s.path(last), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return fail(fmt.Errorf("open spool segment: %w", err))
	}
	for _, seg := range segs {
		if fi, err := os.Stat(s.path(seg)); err == nil {
			s.size += fi.Size()
		}
	}
	s.f = f
	s.end = Position{last, end}
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

// recoverTail scans the last segment and returns where its last valid
// record ends. Bytes after it (a record a crash tore) are copied into the
// quarantine directory and cut off, with a log line. A corrupt stretch
// followed by valid records is left in place: reading quarantines it.
func (s *Spool) recoverTail(seg int64) (int64, error) {
	f, err := os.OpenFile(s.path(seg), os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	} else if err != nil {
		return 0, fmt.Errorf("open spool segment %d: %w", seg, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 1<<20)
	var off int64
	for off < size {
		_, n, err := readRecord(r, size-off)
		if err == nil {
			off += n
			continue
		}
		if !errors.Is(err, errBadRecord) && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("scan spool segment %d at %d: %w", seg, off, err)
		}
		next, found, err := nextValid(f, off, size)
		if err != nil {
			return 0, fmt.Errorf("scan spool segment %d at %d: %w", seg, off, err)
		}
		if found {
			off = next
			r.Reset(io.NewSectionReader(f, off, size-off))
			continue
		}
		copyPath, qerr := s.quarantine(f, seg, off, size, "torn")
		if err := f.Truncate(off); err != nil {
			return 0, fmt.Errorf("cut the torn end off spool segment %d: %w", seg, err)
		}
		if err := f.Sync(); err != nil {
			return 0, fmt.Errorf("cut the torn end off spool segment %d: %w", seg, err)
		}
		s.stats.TornBytes += size - off
		s.log.Warn("cut a torn record off the end of the spool (a crash interrupted its write)",
			"segment", seg, "offset", off, "bytes", size-off, "copy", copyPath, "copy_error", qerr)
		return off, nil
	}
	return off, nil
}

// quarantine copies bytes [from, to) of segment seg into the quarantine
// directory and returns the copy's path.
func (s *Spool) quarantine(f io.ReaderAt, seg, from, to int64, what string) (string, error) {
	dir := filepath.Join(s.dir, "quarantine")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("quarantine: %w", err)
	}
	path := filepath.Join(dir, fmt.Sprintf("%012d.spool-%012d.%s", seg, from, what))
	out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return "", fmt.Errorf("quarantine: %w", err)
	}
	_, err = io.Copy(out, io.NewSectionReader(f, from, to-from))
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("quarantine: %w", err)
	}
	return path, nil
}

// appendRecord appends rec, framed, to b.
func appendRecord(b []byte, rec Record) []byte {
	body := recordBytes(rec) - headerBytes
	start := len(b)
	b = append(b, syncMarker[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(body))
	b = append(b, 0, 0, 0, 0) // checksum, below
	b = append(b, rec.Kind)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(rec.Key)))
	b = append(b, rec.Key...)
	b = append(b, rec.Value...)
	r := b[start:]
	binary.LittleEndian.PutUint32(r[8:], checksum(r[4:8], r[headerBytes:]))
	return b
}

// recordBytes is the size of rec in the spool, its header included.
func recordBytes(rec Record) int { return headerBytes + 1 + 4 + len(rec.Key) + len(rec.Value) }

// bufs holds the buffers records are encoded into on their way to the
// spool file (a decision's is a few KiB): Append writes them and keeps none.
var bufs = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledBuf bounds the buffers kept in bufs, so that one huge batch does
// not pin its memory.
const maxPooledBuf = 1 << 20

// getBuf returns an empty buffer of at least n bytes' capacity.
func getBuf(n int) *[]byte {
	bp := bufs.Get().(*[]byte)
	if cap(*bp) < n {
		*bp = make([]byte, 0, n)
	}
	*bp = (*bp)[:0]
	return bp
}

// putBuf returns bp to bufs.
func putBuf(bp *[]byte) {
	if cap(*bp) <= maxPooledBuf {
		bufs.Put(bp)
	}
}

func checksum(length, body []byte) uint32 {
	return crc32.Update(crc32.Checksum(length, crcTable), crcTable, body)
}

// header reads the header at the start of b: the header's size, the
// body's size and checksum, and whether the record is of the older format.
// ok is false if b is too short to hold the header or the size is out of
// range.
func header(b []byte) (hl int, size, sum uint32, old, ok bool) {
	if len(b) < 4 {
		return 0, 0, 0, false, false
	}
	if [4]byte(b[:4]) == syncMarker {
		if len(b) < headerBytes {
			return 0, 0, 0, false, false
		}
		hl, size, sum = headerBytes, binary.LittleEndian.Uint32(b[4:]), binary.LittleEndian.Uint32(b[8:])
	} else {
		if len(b) < oldHeaderBytes {
			return 0, 0, 0, false, false
		}
		hl, size, sum, old = oldHeaderBytes, binary.LittleEndian.Uint32(b[0:]), binary.LittleEndian.Uint32(b[4:]), true
	}
	return hl, size, sum, old, size >= 5 && size <= maxRecordBytes
}

// decodeBody checks a record's checksum and splits its body.
func decodeBody(hdr []byte, body []byte, sum uint32, old bool) (Record, bool) {
	var got uint32
	if old {
		got = crc32.Checksum(body, crcTable)
	} else {
		got = checksum(hdr[4:8], body)
	}
	if got != sum {
		return Record{}, false
	}
	kl := binary.LittleEndian.Uint32(body[1:])
	if uint64(kl) > uint64(len(body)-5) {
		return Record{}, false
	}
	return Record{Kind: body[0], Key: body[5 : 5+kl], Value: body[5+kl:]}, true
}

// readRecord reads one record of at most remaining bytes; n is its size on
// disk. It returns io.EOF at a clean end, an error wrapping errBadRecord for
// a torn or corrupt record, or the reader's error.
func readRecord(r *bufio.Reader, remaining int64) (Record, int64, error) {
	b, err := r.Peek(headerBytes)
	if len(b) == 0 && errors.Is(err, io.EOF) {
		return Record{}, 0, io.EOF
	} else if err != nil && !errors.Is(err, io.EOF) {
		return Record{}, 0, err
	}
	hl, size, sum, old, ok := header(b)
	if !ok {
		return Record{}, 0, fmt.Errorf("%w: torn or corrupt header", errBadRecord)
	}
	if int64(hl)+int64(size) > remaining {
		return Record{}, 0, fmt.Errorf("%w: a record of %d bytes where %d are left", errBadRecord, int64(hl)+int64(size), remaining)
	}
	var hdr [headerBytes]byte
	copy(hdr[:], b[:hl])
	if _, err := r.Discard(hl); err != nil {
		return Record{}, 0, err
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(r, body); errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return Record{}, 0, fmt.Errorf("%w: torn", errBadRecord)
	} else if err != nil {
		return Record{}, 0, err
	}
	rec, ok := decodeBody(hdr[:hl], body, sum, old)
	if !ok {
		return Record{}, 0, fmt.Errorf("%w: checksum mismatch", errBadRecord)
	}
	return rec, int64(hl) + int64(size), nil
}

// candidate says whether a record may start at b (remaining bytes to the
// limit), cheaply: a record of this version has the sync marker; one of the
// older format must look like an event (kind, a key of an id's length, a
// JSON object), which random bytes seldom do.
func candidate(b []byte, remaining int64) bool {
	hl, size, _, old, ok := header(b)
	if !ok || int64(hl)+int64(size) > remaining {
		return false
	}
	if !old {
		return true
	}
	if len(b) < oldHeaderBytes+5 || (b[8] != KindDecision && b[8] != KindFeedback) {
		return false
	}
	kl := binary.LittleEndian.Uint32(b[9:])
	if kl > maxOldKeyBytes || kl+5 >= size {
		return false
	}
	v := oldHeaderBytes + 5 + int(kl)
	return v < len(b) && b[v] == '{'
}

// nextValid finds the first offset after from and before limit at which a
// whole valid record starts; found is false (and next is limit) if none does.
func nextValid(f io.ReaderAt, from, limit int64) (next int64, found bool, err error) {
	const chunk, ahead = 1 << 20, 2 * maxOldKeyBytes
	buf := make([]byte, chunk+ahead)
	for base := from + 1; base < limit; base += chunk {
		n := int(min(int64(len(buf)), limit-base))
		if _, err := f.ReadAt(buf[:n], base); err != nil && !errors.Is(err, io.EOF) {
			return limit, false, err
		}
		for i := 0; i < min(chunk, n); i++ {
			if !candidate(buf[i:n], limit-base-int64(i)) {
				continue
			}
			ok, err := validAt(f, base+int64(i), limit)
			if err != nil {
				return limit, false, err
			}
			if ok {
				return base + int64(i), true, nil
			}
		}
	}
	return limit, false, nil
}

// validAt says whether a whole valid record starts at off.
func validAt(f io.ReaderAt, off, limit int64) (bool, error) {
	var hdr [headerBytes]byte
	n, err := f.ReadAt(hdr[:min(headerBytes, limit-off)], off)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	hl, size, sum, old, ok := header(hdr[:n])
	if !ok || off+int64(hl)+int64(size) > limit {
		return false, nil
	}
	body := make([]byte, size)
	if _, err := f.ReadAt(body, off+int64(hl)); err != nil {
		return false, nil
	}
	_, ok = decodeBody(hdr[:hl], body, sum, old)
	return ok, nil
}

// lazySync is how soon appends that did not ask to be durable are fsynced:
// fsyncing after every burst of decisions costs serving a tenth of its CPU
// under load, and a machine crash is what this delay can lose.
const lazySync = 50 * time.Millisecond

// Append writes recs to the spool, in order, and returns the position after
// them (or after the appends written with them in one group, later). With
// durable set it returns only once they are fsynced; without, once
// they are written to the operating system (a process crash loses nothing;
// a machine crash may lose what was not yet synced, which the next group
// commit covers within lazySync). It returns an error if the spool did not
// take them, and then none of them may be assumed spooled: one wrapping
// ErrSpoolFull if they would pass MaxBytes or the disk is full, the disk's
// error for another failed write or fsync, ErrSpoolClosed after Close. A
// failure does not outlast its cause: the next Append tries again.
func (s *Spool) Append(recs []Record, durable bool) (Position, error) {
	n := 0
	for _, r := range recs {
		n += recordBytes(r)
	}
	bp := getBuf(n)
	defer putBuf(bp)
	buf := *bp
	for _, r := range recs {
		buf = appendRecord(buf, r)
	}
	*bp = buf
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Position{}, ErrSpoolClosed
	}
	gathered := 0
	if s.group != nil {
		gathered = len(s.group.buf)
	}
	if s.size+int64(gathered+len(buf)) > s.maxBytes {
		s.full, s.fullBytes = true, int64(len(buf))
		return Position{}, fmt.Errorf("%w: %d bytes are spooled and the cap is %d", ErrSpoolFull, s.size+int64(gathered), s.maxBytes)
	}
	s.full = false
	s.stats.Appends++
	end, err := s.writeGroupLocked(buf)
	if err != nil {
		return Position{}, err
	}
	if !durable {
		s.kickLaterLocked()
		return end, nil
	}
	fails := s.syncFails
	for s.durable.less(end) {
		if s.syncFails != fails {
			return Position{}, s.syncErr
		}
		if s.closed {
			return Position{}, ErrSpoolClosed
		}
		s.kickLocked()
		s.cond.Wait()
	}
	return end, nil
}

// group is the appends one write takes (flat combining): the first append
// that finds no write under way leads, yields once so that the appends
// runnable meanwhile join it (under load a server's handlers reach the
// spool together), then writes them all with one write. A write costs
// serving more than copying a record does: 12 us of CPU per decision when
// each was its own pwrite, at 3,000 requests a second.
//
// The yield has no bound of its own: under steady load a yielding
// goroutine can wait behind many others. So an append that finds a group
// older than groupWait, or of groupMax appends, does not join it but
// writes it, its own append with it: no append waits much longer than
// groupWait for the write that takes it.
type group struct {
	buf   []byte
	n     int
	since time.Time
	done  bool
	end   Position // after the whole group
	err   error
}

const (
	groupWait = 100 * time.Microsecond
	groupMax  = 64
)

// writeGroupLocked writes buf, in a group with the appends that come
// meanwhile, and returns the position after the group (at or after buf's
// own end) or the error that failed the group's write (none of it is then
// in the spool).
func (s *Spool) writeGroupLocked(buf []byte) (Position, error) {
	if g := s.group; g != nil { // a leader is gathering
		g.buf = append(g.buf, buf...)
		g.n++
		if g.n < groupMax && time.Since(g.since) < groupWait {
			for !g.done {
				s.cond.Wait()
			}
			return g.end, g.err
		}
		s.writeGroup(g) // the leader is away too long: write for it
		return g.end, g.err
	}
	g := &group{buf: buf, n: 1, since: time.Now()}
	s.group = g
	s.mu.Unlock()
	runtime.Gosched()
	s.mu.Lock()
	if !g.done {
		s.writeGroup(g)
	}
	return g.end, g.err
}

// writeGroup writes group g, the one gathering, and wakes its appends.
func (s *Spool) writeGroup(g *group) {
	s.group = nil
	if s.closed {
		g.err = ErrSpoolClosed
	} else {
		s.stats.Writes++
		g.err = s.writeLocked(g.buf)
	}
	g.done, g.end = true, s.end
	if g.n > 1 {
		s.cond.Broadcast()
	}
}

// writeLocked writes buf at the end of the spool, rolling over to a new
// segment first if it would pass segmentBytes. A failed write is cut back
// off the segment, so that the segment holds whole records only.
func (s *Spool) writeLocked(buf []byte) error {
	if s.truncate {
		if err := s.f.Truncate(s.end.Off); err != nil {
			return s.failLocked(fmt.Errorf("spool truncate: %w", err), len(buf))
		}
		s.truncate = false
	}
	for s.end.Off > 0 && s.end.Off+int64(len(buf)) > s.segmentBytes {
		if err := s.rollLocked(); err != nil {
			return s.failLocked(err, len(buf))
		}
	}
	n, err := s.f.WriteAt(buf, s.end.Off)
	if err != nil {
		// Cut what the failed write left, even if it reports no byte
		// written: tmpfs extends the file by the part of a page it filled.
		s.truncate = s.f.Truncate(s.end.Off) != nil
		return s.failLocked(fmt.Errorf("spool write: %w", err), len(buf))
	}
	s.end.Off += int64(n)
	s.size += int64(n)
	s.failErr = nil
	return nil
}

// failLocked records a failed write or fsync of n bytes and returns err,
// wrapping ErrSpoolFull too if the disk is full.
func (s *Spool) failLocked(err error, n int) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		err = fmt.Errorf("%w: the disk is full: %w", ErrSpoolFull, err)
	}
	s.stats.WriteErrors++
	s.failErr, s.failBytes, s.failAt = err, n, s.now()
	return err
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

// Sync makes everything appended so far durable before it returns; it
// returns the fsync's error if that failed.
func (s *Spool) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	fails := s.syncFails
	for s.durable.less(s.end) && !s.closed {
		if s.syncFails != fails {
			return s.syncErr
		}
		s.kickLocked()
		s.cond.Wait()
	}
	return nil
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

// syncLoop fsyncs until everything written is durable; after a failed
// fsync it stops (the appends waiting fail) and the next append or lazy
// sync tries again.
func (s *Spool) syncLoop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.durable.less(s.end) && !s.closed {
		target, f := s.end, s.f
		s.mu.Unlock()
		err := f.Sync()
		s.mu.Lock()
		if err != nil {
			s.syncFails++
			s.syncErr = s.failLocked(fmt.Errorf("spool fsync: %w", err), 0)
			break
		}
		if s.durable.less(target) {
			s.durable = target
		}
		s.cond.Broadcast()
	}
	s.syncing = false
	s.cond.Broadcast()
}

// rollLocked syncs and closes the current segment and starts the next,
// unless another append rolled over while it waited.
func (s *Spool) rollLocked() error {
	seg := s.end.Seg
	for s.syncing { // let a running group commit finish with the old file
		s.cond.Wait()
	}
	if s.closed {
		return ErrSpoolClosed
	}
	if s.end.Seg != seg {
		return nil
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("spool fsync: %w", err)
	}
	s.durable = s.end
	s.cond.Broadcast()
	next := s.end.Seg + 1
	f, err := os.OpenFile(s.path(next), os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("new spool segment: %w", err)
	}
	s.f.Close()
	s.f = f
	s.end = Position{next, 0}
	s.durable = s.end
	return nil
}

// probeEvery is how often Health may probe a disk that failed a write.
const probeEvery = time.Second

// Health returns nil while the spool takes writes. Otherwise it returns why
// not: an error wrapping ErrSpoolFull while the spool is at MaxBytes (until
// shipping releases room) or its disk is full, or the error of the last
// failed write or fsync, until a write succeeds again. Because a process
// that says it is unhealthy may get no traffic to try again with, Health
// itself probes a disk that failed, at most once every probeEvery: it
// writes, fsyncs and removes a file as large as the failed write (4 KiB to
// 1 MiB) and reports healthy if that worked. It is safe for concurrent use.
func (s *Spool) Health() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrSpoolClosed
	}
	if s.full && s.size+s.fullBytes > s.maxBytes {
		err := fmt.Errorf("%w: %d bytes are spooled and the cap is %d", ErrSpoolFull, s.size, s.maxBytes)
		s.mu.Unlock()
		return err
	}
	s.full = false
	err, n, at, fails := s.failErr, s.failBytes, s.failAt, s.stats.WriteErrors
	s.mu.Unlock()
	if err == nil {
		return nil
	}
	if s.now().Sub(at) < probeEvery || !s.probing.TryLock() {
		return err
	}
	defer s.probing.Unlock()
	perr := s.probe(min(max(n, 4<<10), 1<<20))
	s.mu.Lock()
	defer s.mu.Unlock()
	if perr != nil {
		s.failAt = s.now()
		return err
	}
	if s.stats.WriteErrors == fails { // no write failed while probing
		s.failErr = nil
	}
	return s.failErr
}

// probe writes, fsyncs and removes a file of n bytes in the spool's
// directory.
func (s *Spool) probe(n int) error {
	path := filepath.Join(s.dir, "PROBE")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	_, err = f.Write(make([]byte, n))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Stats returns the spool's counters.
func (s *Spool) Stats() SpoolStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Bytes = s.size
	return st
}

// MaxBytes returns the spool's size cap.
func (s *Spool) MaxBytes() int64 { return s.maxBytes }

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

// Release deletes every segment wholly before p (never the one being
// written): its records are in Kafka.
func (s *Spool) Release(p Position) error {
	segs, err := s.segments()
	if err != nil {
		return err
	}
	current := s.End().Seg
	var freed int64
	defer func() {
		s.mu.Lock()
		s.size -= freed
		if s.full && s.size+s.fullBytes <= s.maxBytes {
			s.full = false
		}
		s.mu.Unlock()
	}()
	for _, seg := range segs {
		if seg >= p.Seg || seg >= current {
			break
		}
		fi, err := os.Stat(s.path(seg))
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return fmt.Errorf("release spool segment %d: %w", seg, err)
		}
		if err := os.Remove(s.path(seg)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("release spool segment %d: %w", seg, err)
		} else if err == nil {
			freed += fi.Size()
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
// that is no longer written it moves on to the next one. A corrupt stretch
// is quarantined and skipped (the position returned may then be past it
// with no records). It returns an error only if a segment cannot be read.
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
		limit := durable.Off
		if p.Seg < durable.Seg {
			fi, err := f.Stat()
			if err != nil {
				f.Close()
				return nil, p, fmt.Errorf("spool segment %d: %w", p.Seg, err)
			}
			limit = fi.Size()
		}
		recs, next, err := s.readSegment(f, p, limit, max)
		f.Close()
		if err != nil {
			return nil, p, err
		}
		if len(recs) == 0 && p.Seg < durable.Seg && next.Off >= limit {
			p = Position{p.Seg + 1, 0} // this segment is finished
			continue
		}
		return recs, next, nil
	}
}

// readSegment reads records of f from p up to limit. When it meets a bad
// record with nothing read before it, it quarantines the bytes up to the
// next valid record (or limit) and goes on from there.
func (s *Spool) readSegment(f *os.File, p Position, limit int64, max int) ([]Record, Position, error) {
	r := bufio.NewReaderSize(io.NewSectionReader(f, p.Off, limit-p.Off), 64<<10)
	var recs []Record
	for len(recs) < max && p.Off < limit {
		rec, n, err := readRecord(r, limit-p.Off)
		if err == nil {
			recs = append(recs, rec)
			p.Off += n
			continue
		}
		if errors.Is(err, io.EOF) {
			break // the file is shorter than it was
		}
		if !errors.Is(err, errBadRecord) {
			return nil, p, fmt.Errorf("spool segment %d at %d: %w", p.Seg, p.Off, err)
		}
		if len(recs) > 0 {
			break // hand these back; the next call deals with the bad bytes
		}
		next, _, err := nextValid(f, p.Off, limit)
		if err != nil {
			return nil, p, fmt.Errorf("spool segment %d at %d: %w", p.Seg, p.Off, err)
		}
		s.quarantineCorrupt(f, p, next)
		p.Off = next
		r.Reset(io.NewSectionReader(f, p.Off, limit-p.Off))
	}
	return recs, p, nil
}

// quarantineCorrupt copies the corrupt bytes from p to the offset to aside,
// counts and logs them, once per process.
func (s *Spool) quarantineCorrupt(f io.ReaderAt, p Position, to int64) {
	s.mu.Lock()
	seen := s.seen[p]
	if !seen {
		s.seen[p] = true
		s.stats.Quarantined++
		s.stats.QuarantinedBytes += to - p.Off
	}
	s.mu.Unlock()
	if seen {
		return
	}
	path, err := s.quarantine(f, p.Seg, p.Off, to, "corrupt")
	if err != nil {
		s.log.Error("skipped corrupt bytes in the spool but could not copy them aside", "segment", p.Seg, "offset", p.Off, "bytes", to-p.Off, "err", err)
		return
	}
	s.log.Warn("quarantined corrupt bytes in the spool; shipping goes on at the next valid record",
		"segment", p.Seg, "offset", p.Off, "bytes", to-p.Off, "resume_offset", to, "copy", path)
}

// Cursor persistence: the position up to which records are in Kafka.

func (s *Spool) cursorPath() string { return filepath.Join(s.dir, "CURSOR") }

// LoadCursor returns the saved shipping position, or the start of the
// oldest segment if none is saved or the saved one is unreadable or past
// the end of the spool (then everything left is shipped again, with a log
// line). It returns an error only if the cursor file cannot be read.
func (s *Spool) LoadCursor() (Position, error) {
	oldest := func() (Position, error) {
		segs, err := s.segments()
		if err != nil || len(segs) == 0 {
			return Position{Seg: s.End().Seg}, err
		}
		return Position{Seg: segs[0]}, nil
	}
	b, err := os.ReadFile(s.cursorPath())
	if errors.Is(err, os.ErrNotExist) {
		return oldest()
	} else if err != nil {
		return Position{}, fmt.Errorf("read spool cursor: %w", err)
	}
	var p Position
	if _, err := fmt.Sscanf(string(b), "%d %d", &p.Seg, &p.Off); err != nil || p.Off < 0 || s.End().less(p) {
		s.log.Warn("the spool's cursor is unreadable or past its end: shipping everything in the spool again", "cursor", strconv.Quote(string(b)), "end", s.End())
		return oldest()
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
	if err != nil {
		s.syncFails++
		s.syncErr = fmt.Errorf("spool fsync: %w", err)
	} else {
		s.durable = s.end
	}
	s.cond.Broadcast()
	s.lock.Close()
	return err
}
