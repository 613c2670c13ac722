package synapse

import (
	"strings"
	"testing"
	"time"
)

// A trimmed sample of Synapse 1.160's /_synapse/metrics (testbed, federation_metrics_domains
// listing hs2).
const synapseMetricsSample = `# HELP synapse_federation_last_sent_pdu_time The timestamp of the last PDU which was successfully sent to the given domain
# TYPE synapse_federation_last_sent_pdu_time gauge
synapse_federation_last_sent_pdu_time{destination_server_name="hs2.test:8482",server_name="hs1.test:8481"} 1.7646708e+09
synapse_federation_last_sent_pdu_time{destination_server_name="nan.example",server_name="hs1.test:8481"} NaN
synapse_federation_last_sent_pdu_time{server_name="hs1.test:8481"} 1.7646708e+09
# HELP synapse_federation_transaction_queue_pending_pdus
# TYPE synapse_federation_transaction_queue_pending_pdus gauge
synapse_federation_transaction_queue_pending_pdus{server_name="hs1.test:8481"} 3.0
# HELP synapse_http_matrixfederationclient_requests_total
# TYPE synapse_http_matrixfederationclient_requests_total counter
synapse_http_matrixfederationclient_requests_total{method="PUT",server_name="hs1.test:8481"} 12.0
`

func TestLastSentPDU(t *testing.T) {
	fams, err := ParseMetrics(strings.NewReader(synapseMetricsSample))
	if err != nil {
		t.Fatal(err)
	}
	got := LastSentPDU(fams)
	if len(got) != 1 || !got["hs2.test:8482"].Equal(time.UnixMilli(1764670800000)) {
		t.Fatalf("last sent PDU per destination: %v", got)
	}
	if got := LastSentPDU(nil); len(got) != 0 {
		t.Errorf("no metrics: %v", got)
	}
	if _, err = ParseMetrics(strings.NewReader("synapse_x{a=\"b\" 1\n")); err == nil {
		t.Error("a malformed exposition parsed")
	}
}

// FuzzParseMetrics: whatever the metrics endpoint sends, parsing it and reading the
// per-destination figure never panics, and every time read is a real one.
func FuzzParseMetrics(f *testing.F) {
	f.Add(synapseMetricsSample)
	f.Add("synapse_federation_last_sent_pdu_time{destination_server_name=\"x\"} +Inf\n")
	f.Add("# TYPE synapse_federation_last_sent_pdu_time counter\nsynapse_federation_last_sent_pdu_time{destination_server_name=\"x\"} 1\n")
	f.Fuzz(func(t *testing.T, s string) {
		fams, err := ParseMetrics(strings.NewReader(s))
		if err != nil {
			return
		}
		for dest, at := range LastSentPDU(fams) {
			if dest == "" || at.Year() < 1970 || at.Year() > 5000 {
				t.Fatalf("%q at %v", dest, at)
			}
		}
	})
}
