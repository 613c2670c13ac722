package synapse

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Synapse's Prometheus metrics (1.160) carry one per-destination figure:
// synapse_federation_last_sent_pdu_time{destination_server_name}, the origin_server_ts (in
// seconds) of the last PDU delivered to the destination, kept only for the servers listed in
// Synapse's federation_metrics_domains and only once a PDU was delivered since Synapse
// started. Every other federation metric (sent transactions, requests and responses of the
// federation client, pending PDUs and destinations) is a total over all destinations.
const LastSentPDUMetric = "synapse_federation_last_sent_pdu_time"

// maxMetricsBytes bounds what medic reads from the metrics endpoint (Synapse's is ~1 MB).
const maxMetricsBytes = 32 << 20

// FetchMetrics reads Synapse's Prometheus endpoint (synapse.metrics_url) and parses it with
// the Prometheus text parser.
func FetchMetrics(ctx context.Context, client *http.Client, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("synapse.metrics_url: %w", err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read Synapse's metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read Synapse's metrics: %s answered %s", url, resp.Status)
	}
	return ParseMetrics(io.LimitReader(resp.Body, maxMetricsBytes))
}

// ParseMetrics parses the Prometheus text format.
func ParseMetrics(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse Synapse's metrics: %w", err)
	}
	return fams, nil
}

// LastSentPDU returns, per destination, when the last PDU delivered to it was sent
// (LastSentPDUMetric); destinations without a usable value are left out.
func LastSentPDU(fams map[string]*dto.MetricFamily) map[string]time.Time {
	out := map[string]time.Time{}
	fam := fams[LastSentPDUMetric]
	if fam == nil {
		return out
	}
	for _, m := range fam.GetMetric() {
		dest := ""
		for _, l := range m.GetLabel() {
			if l.GetName() == "destination_server_name" {
				dest = l.GetValue()
			}
		}
		v := m.GetGauge().GetValue()
		if dest == "" || v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) || v > 1e11 {
			continue
		}
		out[dest] = time.UnixMilli(int64(v * 1000))
	}
	return out
}

// Undelivered is what Synapse queued for a destination after the last PDU it delivered.
type Undelivered struct {
	Rooms  int       // rooms whose latest PDU for the destination is newer
	Oldest time.Time // the oldest of those PDUs (origin_server_ts)
}

// UndeliveredSince reads destination_rooms (the latest PDU queued per destination and room)
// for the PDUs queued for destination that were sent after since.
func (db *DB) UndeliveredSince(ctx context.Context, destination string, since time.Time) (Undelivered, error) {
	var u Undelivered
	var oldest *int64
	if err := db.Pool.QueryRow(ctx, UndeliveredQuery, destination, since.UnixMilli()).Scan(&u.Rooms, &oldest); err != nil {
		return u, fmt.Errorf("PDUs queued for %s: %w", destination, err)
	}
	if oldest != nil {
		u.Oldest = time.UnixMilli(*oldest)
	}
	return u, nil
}
