package diagnose

import (
	"context"
	"fmt"
	"time"

	"github.com/synapse-medic/medic/synapse/adminapi"
)

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
