// Command memberlist-harness hosts N HashiCorp memberlist instances on loopback
// in one process and measures cold-start convergence, steady-state traffic and
// failure detection after a crash of a fraction of the instances.
//
// Every instance uses memberlist.DefaultLANConfig() and the stock NetTransport,
// wrapped to count what it sends. An instance's view is kept by an
// EventDelegate: NotifyJoin and NotifyLeave are exactly the transitions that
// memberlist's own Members() reflects (a member is listed unless it is dead or
// has left; a suspect member is still listed).
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"math/rand"
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"
)

// memberlistVersion is set at link time from the installed package version.
var memberlistVersion = "unknown"

const (
	progName       = "memberlist-harness"
	usageLine      = "usage: memberlist-harness -nodes N [-kill 0.01] [-join-window 1.0] [-cold-start-limit 120] [-detect-limit 120] [-sample-ms 100] [-json PATH]"
	steadyDuration = 5 * time.Second
	joinAttempts   = 3
	joinRetryDelay = time.Second
	bindAttempts   = 20
	// Each instance holds a UDP socket and a TCP listener; TCP streams (joins, push/pull,
	// fallback pings) are short-lived and share the reserve.
	fdsPerNode = 2
	fdsReserve = 2048
)

var errCrashed = errors.New("instance crashed")

// ---------------------------------------------------------------------------
// Command line

type options struct {
	nodes       int
	kill        float64
	joinWindow  float64
	coldLimit   float64
	detectLimit float64
	sampleMS    int
	jsonPath    string
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet(progName, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.IntVar(&o.nodes, "nodes", 0, "number of instances, seed included (2..20000)")
	fs.Float64Var(&o.kill, "kill", 0.01, "fraction of instances to crash, in [0,1); at least one is crashed")
	fs.Float64Var(&o.joinWindow, "join-window", 1.0, "joins are spread over this many probe intervals")
	fs.Float64Var(&o.coldLimit, "cold-start-limit", 120, "seconds to wait for cold-start convergence")
	fs.Float64Var(&o.detectLimit, "detect-limit", 120, "seconds to wait for failure detection")
	fs.IntVar(&o.sampleMS, "sample-ms", 100, "sampling period of the instances' views, in milliseconds")
	fs.StringVar(&o.jsonPath, "json", "", "write the result as JSON to this path")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case !set["nodes"]:
		return o, errors.New("-nodes is required")
	case o.nodes < 2 || o.nodes > 20000:
		return o, fmt.Errorf("-nodes must be in 2..20000, got %d", o.nodes)
	case !(o.kill >= 0 && o.kill < 1):
		return o, fmt.Errorf("-kill must be in [0,1), got %v", o.kill)
	case !(o.joinWindow >= 0 && o.joinWindow <= 600):
		return o, fmt.Errorf("-join-window must be in [0,600], got %v", o.joinWindow)
	case !(o.coldLimit > 0 && o.coldLimit <= 3600):
		return o, fmt.Errorf("-cold-start-limit must be in (0,3600], got %v", o.coldLimit)
	case !(o.detectLimit > 0 && o.detectLimit <= 3600):
		return o, fmt.Errorf("-detect-limit must be in (0,3600], got %v", o.detectLimit)
	case o.sampleMS < 1 || o.sampleMS > 10000:
		return o, fmt.Errorf("-sample-ms must be in 1..10000, got %d", o.sampleMS)
	case set["json"] && o.jsonPath == "":
		return o, errors.New("-json needs a path")
	}
	return o, nil
}

// ---------------------------------------------------------------------------
// Counting transport

// traffic holds what one instance has sent.
type traffic struct {
	udpBytes   uint64
	datagrams  uint64
	tcpBytes   uint64
	tcpStreams uint64
}

// countingTransport wraps memberlist's NetTransport. It counts the UDP
// datagrams and bytes handed to WriteTo, and the bytes written on every TCP
// stream, dialled or accepted. After crash() it sends nothing more: packet
// writes and dials fail, open streams are closed and new ones are dropped,
// as if the process had died.
type countingTransport struct {
	inner    *memberlist.NetTransport
	stats    *traffic
	streamCh chan net.Conn
	done     chan struct{}
	stopOnce sync.Once

	mu      sync.Mutex
	crashed bool
	conns   map[*countingConn]struct{}
}

var _ memberlist.NodeAwareTransport = (*countingTransport)(nil)

// newCountingTransport binds a UDP socket and a TCP listener on the same
// kernel-chosen port of 127.0.0.1, retrying when the UDP side of that port is
// taken.
func newCountingTransport(stats *traffic) (*countingTransport, int, error) {
	var inner *memberlist.NetTransport
	var err error
	for try := 0; try < bindAttempts; try++ {
		inner, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{"127.0.0.1"},
			BindPort:  0,
			Logger:    log.New(io.Discard, "", 0),
		})
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, 0, err
	}
	t := &countingTransport{
		inner:    inner,
		stats:    stats,
		streamCh: make(chan net.Conn),
		done:     make(chan struct{}),
		conns:    make(map[*countingConn]struct{}),
	}
	go t.forwardStreams()
	return t, inner.GetAutoBindPort(), nil
}

// forwardStreams hands the accepted TCP connections to memberlist, wrapped so
// that the replies written on them are counted.
func (t *countingTransport) forwardStreams() {
	in := t.inner.StreamCh()
	for {
		select {
		case c := <-in:
			cc := t.track(c)
			if cc == nil {
				continue
			}
			select {
			case t.streamCh <- cc:
			case <-t.done:
				cc.Close()
				return
			}
		case <-t.done:
			return
		}
	}
}

func (t *countingTransport) track(c net.Conn) *countingConn {
	t.mu.Lock()
	if t.crashed {
		t.mu.Unlock()
		c.Close()
		return nil
	}
	cc := &countingConn{Conn: c, t: t}
	t.conns[cc] = struct{}{}
	t.mu.Unlock()
	atomic.AddUint64(&t.stats.tcpStreams, 1)
	return cc
}

func (t *countingTransport) untrack(cc *countingConn) {
	t.mu.Lock()
	delete(t.conns, cc)
	t.mu.Unlock()
}

func (t *countingTransport) isCrashed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.crashed
}

// crash stops all sending at once and closes the open streams.
func (t *countingTransport) crash() {
	t.mu.Lock()
	t.crashed = true
	open := make([]*countingConn, 0, len(t.conns))
	for cc := range t.conns {
		open = append(open, cc)
	}
	t.mu.Unlock()
	for _, cc := range open {
		cc.Close()
	}
}

// snapshot reads the counters atomically.
func (s *traffic) snapshot() traffic {
	return traffic{
		udpBytes:   atomic.LoadUint64(&s.udpBytes),
		datagrams:  atomic.LoadUint64(&s.datagrams),
		tcpBytes:   atomic.LoadUint64(&s.tcpBytes),
		tcpStreams: atomic.LoadUint64(&s.tcpStreams),
	}
}

func (t *countingTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

func (t *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.isCrashed() {
		return time.Now(), errCrashed
	}
	ts, err := t.inner.WriteTo(b, addr)
	if err == nil {
		atomic.AddUint64(&t.stats.udpBytes, uint64(len(b)))
		atomic.AddUint64(&t.stats.datagrams, 1)
	}
	return ts, err
}

func (t *countingTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *countingTransport) PacketCh() <-chan *memberlist.Packet {
	return t.inner.PacketCh()
}

func (t *countingTransport) IngestPacket(conn net.Conn, addr net.Addr, now time.Time, shouldClose bool) error {
	return t.inner.IngestPacket(conn, addr, now, shouldClose)
}

func (t *countingTransport) IngestStream(conn net.Conn) error {
	return t.inner.IngestStream(conn)
}

func (t *countingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.isCrashed() {
		return nil, errCrashed
	}
	c, err := t.inner.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	cc := t.track(c)
	if cc == nil {
		return nil, errCrashed
	}
	return cc, nil
}

func (t *countingTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

func (t *countingTransport) StreamCh() <-chan net.Conn {
	return t.streamCh
}

func (t *countingTransport) Shutdown() error {
	err := t.inner.Shutdown()
	t.stopOnce.Do(func() { close(t.done) })
	return err
}

// countingConn counts the bytes written on one TCP stream.
type countingConn struct {
	net.Conn
	t *countingTransport
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 {
		atomic.AddUint64(&c.t.stats.tcpBytes, uint64(n))
	}
	return n, err
}

func (c *countingConn) Close() error {
	c.t.untrack(c)
	return c.Conn.Close()
}

// ---------------------------------------------------------------------------
// Instances and their views

// instance is one memberlist and its view of the cluster. It is the
// instance's EventDelegate: memberlist calls NotifyJoin when a member becomes
// alive (from unknown, dead or left) and NotifyLeave when it is declared dead
// or has left, so the bit set below holds exactly the members Members() lists.
type instance struct {
	idx  int
	n    int
	ml   *memberlist.Memberlist
	tr   *countingTransport
	port int

	sent traffic // what the transport has sent, updated atomically

	mu    sync.Mutex
	seen  []uint64 // bit i: member "n<i>" is in this instance's view
	alive int32    // population count of seen, read atomically

	coldMS   float64 // cold-start time, or -1
	detectMS float64 // detection time, or -1
}

func newInstance(idx, n int) *instance {
	return &instance{idx: idx, n: n, seen: make([]uint64, (n+63)/64), coldMS: -1, detectMS: -1}
}

func (in *instance) memberIndex(node *memberlist.Node) int {
	if len(node.Name) < 2 || node.Name[0] != 'n' {
		return -1
	}
	i, err := strconv.Atoi(node.Name[1:])
	if err != nil || i < 0 || i >= in.n {
		return -1
	}
	return i
}

func (in *instance) NotifyJoin(node *memberlist.Node) {
	i := in.memberIndex(node)
	if i < 0 {
		return
	}
	in.mu.Lock()
	if in.seen[i/64]&(1<<(uint(i)%64)) == 0 {
		in.seen[i/64] |= 1 << (uint(i) % 64)
		atomic.AddInt32(&in.alive, 1)
	}
	in.mu.Unlock()
}

func (in *instance) NotifyLeave(node *memberlist.Node) {
	i := in.memberIndex(node)
	if i < 0 {
		return
	}
	in.mu.Lock()
	if in.seen[i/64]&(1<<(uint(i)%64)) != 0 {
		in.seen[i/64] &^= 1 << (uint(i) % 64)
		atomic.AddInt32(&in.alive, -1)
	}
	in.mu.Unlock()
}

func (in *instance) NotifyUpdate(*memberlist.Node) {}

// seesAll reports whether all of the given members are in the view.
func (in *instance) seesAll(members []int) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, i := range members {
		if in.seen[i/64]&(1<<(uint(i)%64)) == 0 {
			return false
		}
	}
	return true
}

// seesAny reports whether any of the given members is in the view.
func (in *instance) seesAny(members []int) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, i := range members {
		if in.seen[i/64]&(1<<(uint(i)%64)) != 0 {
			return true
		}
	}
	return false
}

// start creates the memberlist of this instance on a fresh loopback port.
func (in *instance) start() error {
	tr, port, err := newCountingTransport(&in.sent)
	if err != nil {
		return fmt.Errorf("binding n%d: %v", in.idx, err)
	}
	cfg := memberlist.DefaultLANConfig()
	cfg.Name = "n" + strconv.Itoa(in.idx)
	cfg.BindAddr = "127.0.0.1"
	cfg.BindPort = port
	cfg.AdvertiseAddr = "127.0.0.1"
	cfg.AdvertisePort = port
	cfg.LogOutput = io.Discard
	cfg.Transport = tr
	cfg.Events = in
	in.tr = tr
	in.port = port
	ml, err := memberlist.Create(cfg)
	if err != nil {
		tr.Shutdown()
		return fmt.Errorf("creating n%d: %v", in.idx, err)
	}
	if got := int(ml.LocalNode().Port); got != port {
		ml.Shutdown()
		return fmt.Errorf("n%d advertises port %d instead of %d", in.idx, got, port)
	}
	in.ml = ml
	return nil
}

// ---------------------------------------------------------------------------
// Result

// num is a JSON number that always carries a decimal point; NaN and
// infinities are written as null.
type num float64

func (v num) MarshalJSON() ([]byte, error) {
	f := float64(v)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".eE") {
		s += ".0"
	}
	return []byte(s), nil
}

func numPtr(v float64, decimals int) *num {
	p := math.Pow(10, float64(decimals))
	r := num(math.Round(v*p) / p)
	return &r
}

// coldJSON is a step's convergence: how many instances converged, of how many, and when.
type coldJSON struct {
	Converged int  `json:"converged"`
	Of        int  `json:"of"`
	FirstMS   *num `json:"first_ms"`
	P50MS     *num `json:"p50_ms"`
	P99MS     *num `json:"p99_ms"`
	LastMS    *num `json:"last_ms"`
	LimitS    num  `json:"limit_s"`
	times     []float64
	endedAt   time.Time
}

// detectJSON is the crash step's convergence, after the number of instances killed.
type detectJSON struct {
	Killed int `json:"killed"`
	coldJSON
}

type rates struct {
	ColdStart *num `json:"cold_start"`
	Steady    *num `json:"steady"`
	Detect    *num `json:"detect"`
}

type result struct {
	Impl              string      `json:"impl"`
	Version           string      `json:"version"`
	Settings          string      `json:"settings"`
	Nodes             int         `json:"nodes"`
	Seeds             int         `json:"seeds"`
	JoinWindowS       num         `json:"join_window_s"`
	SampleMS          int         `json:"sample_ms"`
	ColdStart         *coldJSON   `json:"cold_start"`
	Detect            *detectJSON `json:"detect"`
	BytesPerNodeS     rates       `json:"bytes_per_node_s"`
	DatagramsPerNodeS rates       `json:"datagrams_per_node_s"`
	CPUS              *num        `json:"cpu_s"`
	WallS             *num        `json:"wall_s"`
	PeakRSSMiB        *num        `json:"peak_rss_mib"`
	Error             *string     `json:"error"`

	joinFailures int
	totals       traffic
	staleAtKill  int
}

// summarize fills first/p50/p99/last from the convergence times in ms of the
// instances that converged, out of `of` instances.
func summarize(times []float64, of int) (first, p50, p99, last *num) {
	if len(times) == 0 {
		return nil, nil, nil, nil
	}
	s := append([]float64(nil), times...)
	sort.Float64s(s)
	first = numPtr(s[0], 1)
	p50 = numPtr(nearestRank(s, 50), 1)
	p99 = numPtr(nearestRank(s, 99), 1)
	if len(s) == of {
		last = numPtr(s[len(s)-1], 1)
	}
	return
}

// nearestRank returns the p-th percentile of sorted values, nearest-rank
// method.
func nearestRank(sorted []float64, p float64) float64 {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(sorted) {
		rank = len(sorted)
	}
	return sorted[rank-1]
}

func settingsString(cfg *memberlist.Config) string {
	return fmt.Sprintf("DefaultLANConfig: ProbeInterval=%s, ProbeTimeout=%s, GossipInterval=%s, GossipNodes=%d, "+
		"PushPullInterval=%s, SuspicionMult=%d, SuspicionMaxTimeoutMult=%d, RetransmitMult=%d, IndirectChecks=%d, "+
		"AwarenessMaxMultiplier=%d, GossipToTheDeadTime=%s, TCPTimeout=%s, DisableTcpPings=%t, "+
		"EnableCompression=%t, UDPBufferSize=%d, no encryption; NetTransport on 127.0.0.1, one process; "+
		"joins: TCP push/pull to the seed, up to %d attempts; alive = not dead/left (suspect counts as alive); "+
		"crash = Shutdown() without Leave(); Go %s; bytes are UDP+TCP payload",
		cfg.ProbeInterval, cfg.ProbeTimeout, cfg.GossipInterval, cfg.GossipNodes,
		cfg.PushPullInterval, cfg.SuspicionMult, cfg.SuspicionMaxTimeoutMult, cfg.RetransmitMult, cfg.IndirectChecks,
		cfg.AwarenessMaxMultiplier, cfg.GossipToTheDeadTime, cfg.TCPTimeout, cfg.DisableTcpPings,
		cfg.EnableCompression, cfg.UDPBufferSize, joinAttempts, strings.TrimPrefix(runtime.Version(), "go"))
}

// ---------------------------------------------------------------------------
// Process measurements

func raiseFileLimit(nodes int) error {
	need := uint64(fdsPerNode*nodes + fdsReserve)
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return fmt.Errorf("cannot read RLIMIT_NOFILE: %v", err)
	}
	if rl.Max < need {
		return fmt.Errorf("open-file hard limit is %d but %d instances need %d (%d per instance + %d); raise it (ulimit -Hn) or use fewer nodes",
			rl.Max, nodes, need, fdsPerNode, fdsReserve)
	}
	if rl.Cur < rl.Max {
		want := rl
		want.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			want.Cur = need
			if err2 := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err2 != nil {
				return fmt.Errorf("cannot raise the open-file soft limit to %d: %v", need, err2)
			}
		}
	}
	return nil
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return math.NaN()
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

func peakRSSMiB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return math.NaN()
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "VmHWM:" {
			kb, err := strconv.ParseFloat(fields[1], 64)
			if err != nil {
				return math.NaN()
			}
			return kb / 1024
		}
	}
	return math.NaN()
}

// ---------------------------------------------------------------------------
// Scenario

type harness struct {
	opt   options
	n     int
	insts []*instance
	rng   *rand.Rand
	res   *result
}

func (h *harness) total() traffic {
	var t traffic
	for _, in := range h.insts {
		s := in.sent.snapshot()
		t.udpBytes += s.udpBytes
		t.datagrams += s.datagrams
		t.tcpBytes += s.tcpBytes
		t.tcpStreams += s.tcpStreams
	}
	return t
}

// perNode returns bytes and datagrams sent per node per second between two
// snapshots taken d apart.
func (h *harness) perNode(a, b traffic, d time.Duration) (*num, *num) {
	secs := d.Seconds()
	if secs <= 0 {
		return nil, nil
	}
	bytes := float64((b.udpBytes+b.tcpBytes)-(a.udpBytes+a.tcpBytes)) / float64(h.n) / secs
	dgrams := float64(b.datagrams-a.datagrams) / float64(h.n) / secs
	return numPtr(bytes, 1), numPtr(dgrams, 3)
}

func (h *harness) run() error {
	if err := raiseFileLimit(h.n); err != nil {
		return err
	}

	h.insts = make([]*instance, h.n)
	for i := range h.insts {
		h.insts[i] = newInstance(i, h.n)
	}
	seed := h.insts[0]
	if err := seed.start(); err != nil {
		return err
	}
	seedAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(seed.port))

	// Start times of the joiners, uniform over the join window.
	window := time.Duration(h.opt.joinWindow * float64(memberlist.DefaultLANConfig().ProbeInterval))
	offsets := make([]time.Duration, h.n-1)
	for i := range offsets {
		offsets[i] = time.Duration(h.rng.Float64() * float64(window))
	}
	sort.Slice(offsets, func(a, b int) bool { return offsets[a] < offsets[b] })

	var created sync.WaitGroup
	created.Add(h.n - 1)
	createErr := make(chan error, 1)
	var joinFailures int32
	var firstJoinErr atomic.Value
	t0ch := make(chan time.Time, 1)

	go func() {
		base := time.Now()
		for k, off := range offsets {
			if d := time.Until(base.Add(off)); d > 0 {
				time.Sleep(d)
			}
			if k == 0 {
				t0ch <- time.Now()
			}
			in := h.insts[k+1]
			go func() {
				err := in.start()
				created.Done()
				if err != nil {
					select {
					case createErr <- err:
					default:
					}
					return
				}
				var jerr error
				for a := 0; a < joinAttempts; a++ {
					if a > 0 {
						time.Sleep(joinRetryDelay)
					}
					if _, jerr = in.ml.Join([]string{seedAddr}); jerr == nil {
						return
					}
				}
				atomic.AddInt32(&joinFailures, 1)
				firstJoinErr.Store(fmt.Sprintf("n%d: %v", in.idx, jerr))
			}()
		}
	}()

	// Cold start.
	t0 := <-t0ch
	cold := &coldJSON{Of: h.n, LimitS: num(h.opt.coldLimit)}
	h.res.ColdStart = cold
	startTraffic := h.total()
	sample := time.Duration(h.opt.sampleMS) * time.Millisecond
	coldDeadline := t0.Add(time.Duration(h.opt.coldLimit * float64(time.Second)))
	ticker := time.NewTicker(sample)
	var coldErr error
coldLoop:
	for len(cold.times) < h.n {
		select {
		case err := <-createErr:
			coldErr = err
			cold.endedAt = time.Now()
			break coldLoop
		case now := <-ticker.C:
			cold.endedAt = now
			ms := float64(now.Sub(t0)) / float64(time.Millisecond)
			for _, in := range h.insts {
				if in.coldMS < 0 && int(atomic.LoadInt32(&in.alive)) == h.n {
					in.coldMS = ms
					cold.times = append(cold.times, ms)
				}
			}
			if !now.Before(coldDeadline) {
				break coldLoop
			}
		}
	}
	ticker.Stop()
	coldTraffic := h.total()
	h.res.totals = coldTraffic
	cold.Converged = len(cold.times)
	cold.FirstMS, cold.P50MS, cold.P99MS, cold.LastMS = summarize(cold.times, h.n)
	h.res.BytesPerNodeS.ColdStart, h.res.DatagramsPerNodeS.ColdStart =
		h.perNode(startTraffic, coldTraffic, cold.endedAt.Sub(t0))
	if coldErr != nil {
		return coldErr
	}

	created.Wait()
	select {
	case err := <-createErr:
		return err
	default:
	}

	// Steady state.
	steadyStart := time.Now()
	steadyFrom := h.total()
	time.Sleep(steadyDuration)
	steadyTo := h.total()
	h.res.BytesPerNodeS.Steady, h.res.DatagramsPerNodeS.Steady =
		h.perNode(steadyFrom, steadyTo, time.Since(steadyStart))

	// Crash.
	k := int(math.Round(h.opt.kill * float64(h.n)))
	if k < 1 {
		k = 1
	}
	if k > h.n-1 {
		k = h.n - 1
	}
	perm := h.rng.Perm(h.n - 1)
	victims := make([]int, k)
	isVictim := make([]bool, h.n)
	for i := range victims {
		victims[i] = perm[i] + 1
		isVictim[victims[i]] = true
	}
	var survivors []*instance
	for _, in := range h.insts {
		if !isVictim[in.idx] {
			survivors = append(survivors, in)
		}
	}
	det := &detectJSON{Killed: k, coldJSON: coldJSON{Of: len(survivors), LimitS: num(h.opt.detectLimit)}}
	h.res.Detect = det
	for _, in := range survivors {
		if !in.seesAll(victims) {
			h.res.staleAtKill++
		}
	}
	killTraffic := h.total()
	tKill := time.Now()
	for _, v := range victims {
		h.insts[v].tr.crash()
	}
	var shut sync.WaitGroup
	for _, v := range victims {
		ml := h.insts[v].ml
		shut.Add(1)
		go func() {
			defer shut.Done()
			ml.Shutdown()
		}()
	}

	// Detection.
	detDeadline := tKill.Add(time.Duration(h.opt.detectLimit * float64(time.Second)))
	ticker = time.NewTicker(sample)
	for len(det.times) < len(survivors) {
		now := <-ticker.C
		det.endedAt = now
		ms := float64(now.Sub(tKill)) / float64(time.Millisecond)
		for _, in := range survivors {
			if in.detectMS < 0 && !in.seesAny(victims) {
				in.detectMS = ms
				det.times = append(det.times, ms)
			}
		}
		if !now.Before(detDeadline) {
			break
		}
	}
	ticker.Stop()
	detTraffic := h.total()
	det.Converged = len(det.times)
	det.FirstMS, det.P50MS, det.P99MS, det.LastMS = summarize(det.times, len(survivors))
	h.res.BytesPerNodeS.Detect, h.res.DatagramsPerNodeS.Detect =
		h.perNode(killTraffic, detTraffic, det.endedAt.Sub(tKill))
	h.res.totals = detTraffic

	shut.Wait()
	h.res.joinFailures = int(atomic.LoadInt32(&joinFailures))
	if h.res.joinFailures > 0 {
		msg, _ := firstJoinErr.Load().(string)
		return fmt.Errorf("%d of %d joins failed after %d attempts (first: %s)", h.res.joinFailures, h.n-1, joinAttempts, msg)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Output

func fmtNum(p *num, unit string) string {
	if p == nil {
		return "-"
	}
	return strconv.FormatFloat(float64(*p), 'f', -1, 64) + unit
}

func printSummary(w io.Writer, r *result) {
	fmt.Fprintf(w, "memberlist %s, %d nodes, 1 seed, join window %.2f s, sample %d ms\n",
		r.Version, r.Nodes, float64(r.JoinWindowS), r.SampleMS)
	if c := r.ColdStart; c != nil {
		fmt.Fprintf(w, "cold start: %d/%d converged, first %s, p50 %s, p99 %s, last %s (limit %.0f s)\n",
			c.Converged, c.Of, fmtNum(c.FirstMS, " ms"), fmtNum(c.P50MS, " ms"), fmtNum(c.P99MS, " ms"),
			fmtNum(c.LastMS, " ms"), float64(c.LimitS))
	}
	if d := r.Detect; d != nil {
		fmt.Fprintf(w, "detect: %d killed, %d/%d survivors detected, first %s, p50 %s, p99 %s, last %s (limit %.0f s)\n",
			d.Killed, d.Converged, d.Of, fmtNum(d.FirstMS, " ms"), fmtNum(d.P50MS, " ms"), fmtNum(d.P99MS, " ms"),
			fmtNum(d.LastMS, " ms"), float64(d.LimitS))
		if r.staleAtKill > 0 {
			fmt.Fprintf(w, "detect: %d survivors did not list every victim when the victims were killed\n", r.staleAtKill)
		}
	}
	if r.ColdStart != nil {
		b, g := r.BytesPerNodeS, r.DatagramsPerNodeS
		fmt.Fprintf(w, "sent per node per s (UDP+TCP bytes / UDP datagrams): cold start %s / %s, steady %s / %s, detect %s / %s\n",
			fmtNum(b.ColdStart, " B"), fmtNum(g.ColdStart, ""), fmtNum(b.Steady, " B"), fmtNum(g.Steady, ""),
			fmtNum(b.Detect, " B"), fmtNum(g.Detect, ""))
		fmt.Fprintf(w, "sent in all: %.2f MiB UDP in %d datagrams, %.2f MiB TCP on %d streams; failed joins %d\n",
			float64(r.totals.udpBytes)/(1<<20), r.totals.datagrams, float64(r.totals.tcpBytes)/(1<<20),
			r.totals.tcpStreams, r.joinFailures)
	}
	fmt.Fprintf(w, "cpu %s, wall %s, peak RSS %s\n",
		fmtNum(r.CPUS, " s"), fmtNum(r.WallS, " s"), fmtNum(r.PeakRSSMiB, " MiB"))
	if r.Error != nil {
		fmt.Fprintf(w, "error: %s\n", *r.Error)
	}
}

func writeJSON(path string, r *result) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	return os.WriteFile(path, data, 0o644)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func run(args []string) int {
	opt, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Println(usageLine)
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %s (%s)\n", progName, oneLine(err.Error()), usageLine)
		return 2
	}

	wallStart := time.Now()
	res := &result{
		Impl:        "memberlist",
		Version:     memberlistVersion,
		Settings:    settingsString(memberlist.DefaultLANConfig()),
		Nodes:       opt.nodes,
		Seeds:       1,
		JoinWindowS: num(opt.joinWindow),
		SampleMS:    opt.sampleMS,
	}
	h := &harness{opt: opt, n: opt.nodes, rng: rand.New(rand.NewSource(time.Now().UnixNano())), res: res}
	runErr := h.run()

	res.CPUS = numPtr(cpuSeconds(), 2)
	res.WallS = numPtr(time.Since(wallStart).Seconds(), 2)
	res.PeakRSSMiB = numPtr(peakRSSMiB(), 1)
	if runErr != nil {
		msg := oneLine(runErr.Error())
		res.Error = &msg
	}

	printSummary(os.Stdout, res)
	code := 0
	if runErr != nil {
		fmt.Fprintf(os.Stderr, "%s: %s\n", progName, *res.Error)
		code = 1
	}
	if opt.jsonPath != "" {
		if err := writeJSON(opt.jsonPath, res); err != nil {
			fmt.Fprintf(os.Stderr, "%s: cannot write %s: %s\n", progName, opt.jsonPath, oneLine(err.Error()))
			code = 1
		}
	}
	return code
}

func main() {
	os.Exit(run(os.Args[1:]))
}
