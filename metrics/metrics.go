// Package metrics is medic's monitoring listener (metrics.listen): /healthz (the process is
// up), /ready (medic syncs and Synapse answers, else 503 with the reason) and /metrics in
// Prometheus' text format.
//
// It runs the health checks on a schedule of its own (metrics.check_interval; the checks are
// cheap by construction) without recording them in the report history, and exposes each
// check's status and key figures, medic's jobs by kind and state, the jobs' run durations, the
// last successful sync and the login-as-user tokens not logged out yet. Every series carries
// the server_name label. contrib/ has alert rules and a Grafana dashboard reading them.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/health"
	"github.com/synapse-medic/medic/store"
)

// Server collects medic's metrics and serves them.
type Server struct {
	cfg     *config.Config
	health  *health.Runner
	store   *store.Store
	synapse func(ctx context.Context) error
	kinds   []string
	version string
	log     zerolog.Logger

	registry  *prometheus.Registry
	durations *prometheus.HistogramVec

	lock   sync.Mutex
	report *health.Report // the last run of the checks, nil before the first
	ln     net.Listener
}

// New prepares the metrics of one medic: rn runs the checks (its Self gives the bot's sync),
// st holds the jobs and tokens, synapseUp tells whether Synapse answers, kinds are the job
// kinds (whose series exist from the start, at zero).
func New(cfg *config.Config, rn *health.Runner, st *store.Store, synapseUp func(ctx context.Context) error,
	kinds []string, version string, log zerolog.Logger) *Server {
	s := &Server{cfg: cfg, health: rn, store: st, synapse: synapseUp, kinds: kinds, version: version, log: log,
		registry: prometheus.NewRegistry()}
	s.durations = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "medic_job_duration_seconds",
		Help:    "How long runs of medic's jobs took, by kind and the state they ended in (done, failed, cancelled). A resumed job's run is another run.",
		Buckets: []float64{0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200},
	}, []string{"kind", "state"})
	for _, k := range kinds {
		for _, st := range []string{store.JobDone, store.JobFailed, store.JobCancelled} {
			s.durations.WithLabelValues(k, st)
		}
	}
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"server_name": cfg.Homeserver.ServerName}, s.registry)
	reg.MustRegister(s.durations, collector{s},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return s
}

// RunEnded records a job run's duration (jobs.Observer).
func (s *Server) RunEnded(kind, state string, took time.Duration) {
	s.durations.WithLabelValues(kind, state).Observe(took.Seconds())
}

// Listen binds metrics.listen, so a taken port fails medic's start rather than going unnoticed.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Metrics.Listen)
	if err != nil {
		return fmt.Errorf("metrics.listen: %w", err)
	}
	s.ln = ln
	return nil
}

// Addr is the address the listener is bound to (after Listen).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers on the bound listener and runs the checks every metrics.check_interval until
// ctx ends.
func (s *Server) Serve(ctx context.Context) {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	var wg sync.WaitGroup
	wg.Go(func() { s.runChecks(ctx) })
	wg.Go(func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	s.log.Info().Stringer("address", s.ln.Addr()).Msg("Serving /healthz, /ready and /metrics")
	if err := srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Err(err).Msg("Metrics listener stopped")
	}
	wg.Wait()
}

// Handler serves /healthz, /ready and /metrics.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "Synapse Medic: /healthz (process up), /ready (syncing and Synapse answers), /metrics (Prometheus)")
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		if reasons := s.notReady(r.Context(), s.self(r.Context())); len(reasons) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: "+strings.Join(reasons, "; "))
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{
		ErrorLog: promLogger{s.log}, ErrorHandling: promhttp.ContinueOnError,
	}))
	return mux
}

type promLogger struct{ log zerolog.Logger }

func (l promLogger) Println(v ...any) { l.log.Warn().Msg(strings.TrimSpace(fmt.Sprintln(v...))) }

// self is the bot's own state (zero when there is no bot).
func (s *Server) self(ctx context.Context) health.SelfStatus {
	if s.health.Self == nil {
		return health.SelfStatus{}
	}
	return s.health.Self(ctx)
}

// notReady says why medic is not ready: its sync is not healthy (no success within
// health.thresholds.sync_stale_after), or Synapse does not answer.
func (s *Server) notReady(ctx context.Context, self health.SelfStatus) []string {
	var reasons []string
	stale := config.Duration(s.cfg.Health.Thresholds.SyncStaleAfter)
	switch {
	case !self.Running:
		reasons = append(reasons, "medic's bot is not running")
	case self.LastSync.IsZero():
		reasons = append(reasons, "no successful sync yet")
	case time.Since(self.LastSync) > stale:
		reasons = append(reasons, fmt.Sprintf("last successful sync %s ago (limit %s)", time.Since(self.LastSync).Round(time.Second), stale))
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.synapse(cctx); err != nil {
		reasons = append(reasons, "Synapse does not answer: "+err.Error())
	}
	return reasons
}

// runChecks runs the health checks now (once the bot has synced, or after 30 seconds, so a
// fresh start does not show medic's own check as warn) and every check_interval after.
func (s *Server) runChecks(ctx context.Context) {
	deadline := time.Now().Add(30 * time.Second)
	for s.health.Self != nil && s.self(ctx).LastSync.IsZero() && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	tick := time.NewTicker(s.cfg.Metrics.Interval())
	defer tick.Stop()
	for {
		s.RunChecks(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// RunChecks runs every health check once and keeps the report for /metrics (it is not stored
// in the history: "since the last report" keeps meaning the last posted or asked-for one).
func (s *Server) RunChecks(ctx context.Context) {
	rep, err := s.health.Run(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("Health checks for the metrics failed")
		}
		return
	}
	s.lock.Lock()
	s.report = rep
	s.lock.Unlock()
}

func (s *Server) lastReport() *health.Report {
	s.lock.Lock()
	defer s.lock.Unlock()
	return s.report
}

// figure is a check's key figure (Result.Metrics[key]) as a gauge, in the metric's unit.
type figure struct {
	check, key string
	scale      float64
	name       string
	desc       *prometheus.Desc
}

func newFigure(check, key string, scale float64, name, help string) figure {
	return figure{check: check, key: key, scale: scale, name: name, desc: gauge(name, help)}
}

// itemFigure is a check's figure per finding (Result.PerItem) as a gauge with the finding's
// label; at most maxItems series, the largest (or, with lowest, the smallest) first.
type itemFigure struct {
	check  string
	scale  float64
	lowest bool
	name   string
	desc   *prometheus.Desc
}

func newItemFigure(check string, scale float64, lowest bool, name, label, help string) itemFigure {
	return itemFigure{check: check, scale: scale, lowest: lowest, name: name, desc: gauge(name, help, label)}
}

const maxItems = 20

func gauge(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	infoDesc        = gauge("medic_info", "Always 1; the version label is medic's.", "version")
	readyDesc       = gauge("medic_ready", "1 when /ready answers 200: medic syncs and Synapse answers; else 0.")
	lastSyncDesc    = gauge("medic_last_sync_timestamp_seconds", "When medic's last successful Matrix sync ended (Unix time); absent before the first.")
	tokensDesc      = gauge("medic_login_tokens_outstanding", "Login-as-user tokens medic created (for !recover) and has not logged out yet; medic logs them out at every start.")
	jobsDesc        = gauge("medic_jobs", "medic's jobs by kind and state (awaiting approval, running, done, failed, cancelled, expired, superseded, interrupted).", "kind", "state")
	statusDesc      = gauge("medic_health_check_status", "Each health check's status: 0 ok, 1 warn, 2 critical, -1 skipped (nothing configured for it).", "check")
	findingsDesc    = gauge("medic_health_check_findings", "How many problems each health check found (the rows it lists as warn or critical).", "check")
	checkTookDesc   = gauge("medic_health_check_duration_seconds", "How long each health check took in the last run.", "check")
	lastChecksDesc  = gauge("medic_health_checks_last_run_timestamp_seconds", "When the health checks for the metrics last ran (Unix time).")
	checkIntervDesc = gauge("medic_health_checks_interval_seconds", "metrics.check_interval: how often the health checks run for the metrics.")

	figures = []figure{
		newFigure("synapse", "latency_ms", 1e-3, "medic_synapse_latency_seconds", "How long Synapse's admin API took to answer the synapse check."),
		newFigure("destinations", "failing", 1, "medic_failing_destinations", "Remote servers Synapse cannot reach: backing off from them, or every request to them failing in its log."),
		newFigure("destinations", "failing_from_log", 1, "medic_failing_destinations_from_log", "Of those, the servers only Synapse's log shows failing (Synapse has not given up on them yet)."),
		newFigure("destinations", "failing_from_metrics", 1, "medic_failing_destinations_from_metrics", "Of those, the servers only Synapse's metrics show failing: PDUs undelivered since their last delivered one (synapse.metrics_url; Synapse has not given up on them yet)."),
		newFigure("forgotten", "forgotten", 1, "medic_forgotten_rooms", "Rooms whose federation traffic Synapse dropped since the last report because it forgot them, not rejoined yet (synapse.logs)."),
		newFigure("rejections", "rejected", 1, "medic_rejected_events", "Rejected events since the last report (at least the last 24 hours), all rooms."),
		newFigure("partial-joins", "partial", 1, "medic_partial_join_rooms", "Rooms in a partial (faster) join."),
		newFigure("extremities", "max", 1, "medic_forward_extremities_max", "The most forward extremities any room has."),
		newFigure("extremities", "rooms", 1, "medic_forward_extremities_rooms", "Rooms with at least health.thresholds.extremities_warn forward extremities."),
		newFigure("size", "database_bytes", 1, "medic_database_size_bytes", "The size of Synapse's database."),
		newFigure("background-updates", "pending", 1, "medic_background_updates_pending", "Synapse background updates still pending."),
	}
	itemFigures = []itemFigure{
		newItemFigure("rejections", 1, false, "medic_room_rejected_events", "room_id", fmt.Sprintf("Rejected events per room since the last report (the %d rooms with the most).", maxItems)),
		newItemFigure("extremities", 1, false, "medic_room_forward_extremities", "room_id", fmt.Sprintf("Forward extremities of the rooms over health.thresholds.extremities_warn (the %d with the most).", maxItems)),
		newItemFigure("disk", 0.01, true, "medic_disk_free_ratio", "disk", "Free space (0 to 1) on each checked file system (health.disks, and PostgreSQL's data directory when readable)."),
	}
	jobStates = []string{store.JobAwaiting, store.JobRunning, store.JobDone, store.JobFailed, store.JobCancelled,
		store.JobExpired, store.JobSuperseded, store.JobInterrupted}
)

// collector reads the values at scrape time: the last check run, medic's store, the sync.
type collector struct{ s *Server }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{infoDesc, readyDesc, lastSyncDesc, tokensDesc, jobsDesc, statusDesc,
		findingsDesc, checkTookDesc, lastChecksDesc, checkIntervDesc} {
		ch <- d
	}
	for _, f := range figures {
		ch <- f.desc
	}
	for _, f := range itemFigures {
		ch <- f.desc
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch <- prometheus.MustNewConstMetric(infoDesc, prometheus.GaugeValue, 1, s.version)
	ch <- prometheus.MustNewConstMetric(checkIntervDesc, prometheus.GaugeValue, s.cfg.Metrics.Interval().Seconds())
	self := s.self(ctx)
	ready := 0.0
	if len(s.notReady(ctx, self)) == 0 {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, ready)
	if !self.LastSync.IsZero() {
		ch <- prometheus.MustNewConstMetric(lastSyncDesc, prometheus.GaugeValue, unix(self.LastSync))
	}
	if n, err := s.store.CountMinted(ctx); err != nil {
		ch <- prometheus.NewInvalidMetric(tokensDesc, err)
	} else {
		ch <- prometheus.MustNewConstMetric(tokensDesc, prometheus.GaugeValue, float64(n))
	}
	c.jobs(ctx, ch)
	if rep := s.lastReport(); rep != nil {
		c.checks(rep, ch)
	}
}

// jobs counts the jobs by kind and state; every known kind has every state, at zero if none.
func (c collector) jobs(ctx context.Context, ch chan<- prometheus.Metric) {
	counts, err := c.s.store.JobCounts(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(jobsDesc, err)
		return
	}
	type key struct{ kind, state string }
	n := map[key]int{}
	for _, k := range c.s.kinds {
		for _, st := range jobStates {
			n[key{k, st}] = 0
		}
	}
	for _, jc := range counts {
		n[key{jc.Kind, jc.State}] += jc.Count
	}
	for k, v := range n {
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(v), k.kind, k.state)
	}
}

func (c collector) checks(rep *health.Report, ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(lastChecksDesc, prometheus.GaugeValue, unix(rep.At))
	for _, r := range rep.Results {
		ch <- prometheus.MustNewConstMetric(statusDesc, prometheus.GaugeValue, float64(r.Status), r.Check)
		ch <- prometheus.MustNewConstMetric(findingsDesc, prometheus.GaugeValue, float64(len(r.Items)), r.Check)
		ch <- prometheus.MustNewConstMetric(checkTookDesc, prometheus.GaugeValue, r.Took.Seconds(), r.Check)
		for _, f := range figures {
			if v, ok := r.Metrics[f.key]; ok && f.check == r.Check {
				ch <- prometheus.MustNewConstMetric(f.desc, prometheus.GaugeValue, v*f.scale)
			}
		}
		for _, f := range itemFigures {
			if f.check != r.Check {
				continue
			}
			for _, k := range top(r.PerItem, f.lowest) {
				ch <- prometheus.MustNewConstMetric(f.desc, prometheus.GaugeValue, r.PerItem[k]*f.scale, k)
			}
		}
	}
}

// top returns up to maxItems keys of m, by value (largest first, or smallest with lowest),
// then by key.
func top(m map[string]float64, lowest bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		va, vb := m[a], m[b]
		if lowest {
			va, vb = vb, va
		}
		switch {
		case va > vb:
			return -1
		case va < vb:
			return 1
		}
		return strings.Compare(a, b)
	})
	return keys[:min(len(keys), maxItems)]
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
