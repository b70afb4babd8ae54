package serve

import (
	"math"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/flywheel-dev/flywheel"
)

// What protects a server from its clients, in the order a request meets it:
// the http.Server's timeouts and header limit (Run), the in-flight limit,
// in open mode the Host, Origin and Content-Type checks, the key's token
// bucket (auth), the body limit (readBody), the request limits and the
// budget of hashed features (checkCost).

// Why a request was refused before a handler ran, the label of
// flywheel_http_refused_total.
const (
	refusedInFlight    = "in_flight"
	refusedRate        = "rate_limited"
	refusedHost        = "host"
	refusedOrigin      = "origin"
	refusedContentType = "content_type"
	refusedCost        = "feature_budget"
)

// unmetered routes are answered whatever the load: probes and scrapes must
// see an overloaded server as it is.
var unmetered = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// limitInFlight answers 503 unavailable, with Retry-After, to a request
// that arrives while limits.max_in_flight are being handled.
func (s *Server) limitInFlight() gin.HandlerFunc {
	limit := int64(s.cfg.Limits.MaxInFlight)
	return func(c *gin.Context) {
		if unmetered[c.Request.URL.Path] {
			c.Next()
			return
		}
		n := s.inFlight.Add(1)
		s.metrics.inFlight.Inc()
		defer func() {
			s.inFlight.Add(-1)
			s.metrics.inFlight.Dec()
		}()
		if n > limit {
			c.Header("Retry-After", "1")
			s.refuse(c, refusedInFlight, flywheel.Errorf(flywheel.EUNAVAILABLE,
				"the server is handling limits.max_in_flight (%d) requests already; retry after 1 s", limit))
			return
		}
		c.Next()
	}
}

// refuse answers err and counts the refusal by reason.
func (s *Server) refuse(c *gin.Context, reason string, err error) {
	s.metrics.refusedRequests.WithLabelValues(reason).Inc()
	writeError(c, err)
	c.Abort()
}

// open reports whether the API runs without keys (`flywheel dev` only).
func (s *Server) open() bool { return len(s.cfg.AppKeys) == 0 && len(s.cfg.AdminKeys) == 0 }

// guardOpen protects an API that runs without keys from the browsers of
// the people who can reach it: a request must name this server (an IP
// address, localhost or the listen address's host) in Host, so that DNS
// rebinding cannot reach it under another name; an Origin, when sent, must
// be this server's; and a POST, PUT, PATCH or DELETE must carry
// Content-Type application/json, which no page can send cross-origin
// without the preflight this server never answers.
func (s *Server) guardOpen() gin.HandlerFunc {
	listenHost, _, _ := net.SplitHostPort(s.cfg.Addr)
	return func(c *gin.Context) {
		if !s.open() {
			c.Next()
			return
		}
		r := c.Request
		if !hostAllowed(r.Host, listenHost) {
			s.refuse(c, refusedHost, flywheel.Errorf(flywheel.EFORBIDDEN,
				"the API runs without keys and answers only requests addressed to it by IP address, localhost or %q; Host is %.80q", listenHost, r.Host))
			return
		}
		if o, ok := r.Header["Origin"]; ok && !sameOrigin(strings.Join(o, ","), r.Host) {
			s.refuse(c, refusedOrigin, flywheel.Errorf(flywheel.EFORBIDDEN,
				"the API runs without keys and refuses cross-origin requests; Origin %.80q is not http://%.80s", strings.Join(o, ","), r.Host))
			return
		}
		switch r.Method {
		case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
			if ct := r.Header.Get("Content-Type"); ct != "application/json" && !isJSONMediaType(ct) {
				s.refuse(c, refusedContentType, flywheel.Errorf(flywheel.EUNSUPPORTED,
					"the API runs without keys: a %s needs Content-Type: application/json (even with an empty body); got %.80q", r.Method, r.Header.Get("Content-Type")))
				return
			}
		}
		c.Next()
	}
}

// hostAllowed reports whether a request's Host names this server: an IP
// address (DNS rebinding needs a name), localhost, or the host of the
// listen address.
func hostAllowed(hostport, listenHost string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	switch {
	case host == "":
		return false
	case net.ParseIP(host) != nil, strings.EqualFold(host, "localhost"):
		return true
	}
	return listenHost != "" && strings.EqualFold(host, listenHost)
}

// sameOrigin reports whether origin is http(s)://host.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Path != "" || u.User != nil {
		return false
	}
	return strings.EqualFold(u.Host, host)
}

// remoteIP is the client's address as the connection shows it: forwarding
// headers, which any client can set, are not believed.
func remoteIP(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

// rateLimit spends a token of bucket, or answers 429 rate_limited with
// Retry-After and reports false.
func (s *Server) rateLimit(c *gin.Context, bucket string) bool {
	if s.buckets == nil {
		return true
	}
	wait, ok := s.buckets.take(bucket, s.now())
	if ok {
		return true
	}
	secs := int(math.Ceil(wait.Seconds()))
	c.Header("Retry-After", strconv.Itoa(max(1, secs)))
	s.refuse(c, refusedRate, flywheel.Errorf(flywheel.ERATELIMITED,
		"more than limits.rate_per_key (%g per second, bursts of %d) requests; retry after %d s", s.cfg.Limits.RatePerKey, s.cfg.Limits.Burst, max(1, secs)))
	return false
}

// maxBuckets bounds the token buckets kept: one per key, or per client
// address when the API is open or a key is wrong.
const maxBuckets = 4096

// buckets are token buckets by key: each holds up to burst tokens, gains
// rate a second and pays one per request. A bucket idle long enough to be
// full is the same as none, so it is dropped when room is needed. Safe for
// concurrent use.
type buckets struct {
	rate, burst float64
	mu          sync.Mutex
	m           map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newBuckets(rate float64, burst int) *buckets {
	if rate <= 0 {
		return nil
	}
	return &buckets{rate: rate, burst: float64(burst), m: map[string]*bucket{}}
}

// take spends a token of key's bucket at now; when there is none it reports
// false and how long until there is one.
func (b *buckets) take(key string, now time.Time) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k, ok := b.m[key]
	if !ok {
		if len(b.m) >= maxBuckets {
			b.evict(now)
		}
		k = &bucket{tokens: b.burst, at: now}
		b.m[key] = k
	}
	if now.After(k.at) {
		k.tokens = math.Min(b.burst, k.tokens+now.Sub(k.at).Seconds()*b.rate)
		k.at = now
	}
	if k.tokens >= 1 {
		k.tokens--
		return 0, true
	}
	return time.Duration((1 - k.tokens) / b.rate * float64(time.Second)), false
}

// evict drops the buckets that are full again; if that leaves more than
// three quarters of maxBuckets (as many clients as that are busy), it drops
// others at random down to half, which gives their clients a full bucket
// again: memory stays bounded, and each eviction pays for many inserts.
func (b *buckets) evict(now time.Time) {
	full := time.Duration(b.burst / b.rate * float64(time.Second))
	for key, k := range b.m {
		if now.Sub(k.at) >= full {
			delete(b.m, key)
		}
	}
	if len(b.m) <= maxBuckets*3/4 {
		return
	}
	for key := range b.m {
		if len(b.m) <= maxBuckets/2 {
			break
		}
		delete(b.m, key)
	}
}

// checkCost refuses, with 400 invalid_argument naming the limit, a request
// whose scoring would touch more than limits.max_features_per_request
// hashed features (flywheel.Cost).
func (s *Server) checkCost(c *gin.Context, name string, ctx flywheel.Features, actions []flywheel.Action) bool {
	limit := s.cfg.Limits.MaxFeaturesPerRequest
	return s.allowCost(c, flywheel.Cost(ctx, actions, s.pairs[name], limit), len(actions))
}

// checkCostListed is checkCost for a request read into a FeatureList: the
// context is set ctx, the actions the sets listed.
func (s *Server) checkCostListed(c *gin.Context, name string, l *flywheel.FeatureList, ctx int, actions []int) bool {
	limit := s.cfg.Limits.MaxFeaturesPerRequest
	return s.allowCost(c, flywheel.CostListed(l, ctx, actions, s.pairs[name], limit), len(actions))
}

// allowCost refuses a request whose cost n is over the limit.
func (s *Server) allowCost(c *gin.Context, n, actions int) bool {
	limit := s.cfg.Limits.MaxFeaturesPerRequest
	if n > limit {
		what := "actions or features"
		if actions == 0 {
			what = "features"
		}
		s.refuse(c, refusedCost, flywheel.Errorf(flywheel.EINVALID,
			"scoring this request would touch at least %d hashed features (per action, the context's and the action's and, for each interaction, the product of both sides'), more than limits.max_features_per_request (%d): send fewer %s",
			n, limit, what))
		return false
	}
	return true
}

// isJSONMediaType says whether a Content-Type names application/json, with
// or without parameters.
func isJSONMediaType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/json"
}
