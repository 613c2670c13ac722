package diagnose

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapse/adminapi"
	"github.com/synapse-medic/medic/synapselog"
)

// A peer counts as failing from the log when every request to it failed for at least
// LogFailingSpan, the last one within LogFailingRecent: Synapse retries a transaction after
// about 2, 10, 40 and 100 seconds, so a dead peer shows within two minutes, while one refused
// connection or a peer that came back does not.
const (
	LogFailingSpan   = time.Minute
	LogFailingRecent = 5 * time.Minute
	logPeersWindow   = 30 * time.Minute
)

// FailingPeersFromLogs returns the servers Synapse's log shows as unreachable now (see
// LogFailingSpan), before Synapse itself records them in its destinations table.
func FailingPeersFromLogs(ctx context.Context, logs []config.LogSource, now time.Time) ([]*synapselog.Peer, error) {
	pl, err := synapselog.RecentPeers(ctx, Sources(logs), logPeersWindow, now)
	if err != nil {
		return nil, fmt.Errorf("read Synapse's log: %w", err)
	}
	var failing []*synapselog.Peer
	for _, p := range pl.Sorted() {
		if p.Failing(now.Add(-LogFailingRecent), LogFailingSpan) {
			failing = append(failing, p)
		}
	}
	return failing, nil
}

// FailingDestinations returns the destinations Synapse is backing off from.
func FailingDestinations(ctx context.Context, adm *adminapi.Client) ([]*adminapi.Destination, error) {
	all, err := adm.Destinations(ctx)
	if err != nil {
		return nil, err
	}
	var failing []*adminapi.Destination
	for _, d := range all {
		if d.Failing() {
			failing = append(failing, d)
		}
	}
	return failing, nil
}

// DescribeRetry says in words how Synapse treats a destination.
func DescribeRetry(d *adminapi.Destination) string {
	s := "not failing"
	if d.FailureTS != nil {
		s = "failing since " + time.UnixMilli(*d.FailureTS).UTC().Format("2006-01-02 15:04:05 MST")
	}
	if d.RetryInterval > 0 {
		next := time.UnixMilli(d.RetryLastTS + d.RetryInterval)
		s += fmt.Sprintf(", next retry after %s (backoff %s)", next.UTC().Format("15:04:05 MST"),
			(time.Duration(d.RetryInterval) * time.Millisecond).Round(time.Second))
	}
	return s
}

// MetricsUndeliveredAfter is how long a PDU may wait for delivery before its destination
// counts as failing from Synapse's metrics: Synapse sends a PDU as soon as it is queued, and
// to a reachable server it arrives within seconds.
const MetricsUndeliveredAfter = 30 * time.Second

// MetricsPeer is a destination Synapse's metrics show failing: PDUs queued for it since its
// last delivered one.
type MetricsPeer struct {
	Server        string
	LastDelivered time.Time // the origin_server_ts of the last PDU delivered
	synapse.Undelivered
}

// FailingPeersFromMetrics returns the destinations whose last delivered PDU (Synapse's
// metrics, synapse.LastSentPDUMetric) is older than a PDU queued for them (Synapse's
// destination_rooms) by MetricsUndeliveredAfter by now. Only the servers Synapse keeps the
// metric for (federation_metrics_domains) can show.
func FailingPeersFromMetrics(ctx context.Context, client *http.Client, url string, db *synapse.DB, now time.Time) ([]*MetricsPeer, error) {
	fams, err := synapse.FetchMetrics(ctx, client, url)
	if err != nil {
		return nil, err
	}
	last := synapse.LastSentPDU(fams)
	servers := make([]string, 0, len(last))
	for s := range last {
		servers = append(servers, s)
	}
	sort.Strings(servers)
	var failing []*MetricsPeer
	for _, s := range servers {
		u, err := db.UndeliveredSince(ctx, s, last[s])
		if err != nil {
			return nil, err
		}
		if u.Rooms > 0 && now.Sub(u.Oldest) >= MetricsUndeliveredAfter {
			failing = append(failing, &MetricsPeer{Server: s, LastDelivered: last[s], Undelivered: u})
		}
	}
	return failing, nil
}
