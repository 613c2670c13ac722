package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
)

// HealthRecord is one health report as kept in the history.
type HealthRecord struct {
	At      time.Time
	Trigger string
	Posted  bool
	Results map[string]HealthResult
}

// HealthResult is one check's outcome in a stored report.
type HealthResult struct {
	Status  int
	Summary string
	Items   []string
	Metrics map[string]float64
}

// MetricPoint is one value of a metric at the time of a report.
type MetricPoint struct {
	At    time.Time
	Value float64
}

const (
	insertHealthReportQuery = `INSERT INTO health_report (at, trigger, posted) VALUES ($1, $2, $3)`
	insertHealthResultQuery = `INSERT INTO health_result (report_at, check_id, status, summary, items, metrics)
		VALUES ($1, $2, $3, $4, $5, $6)`
	// lastHealthReportQuery finds the newest report at or before a time, optionally only posted ones.
	lastHealthReportQuery = `SELECT at, trigger, posted FROM health_report
		WHERE at <= $1 AND (posted OR NOT $2) ORDER BY at DESC LIMIT 1`
	healthResultsQuery = `SELECT check_id, status, summary, items, metrics FROM health_result WHERE report_at = $1`
	healthMetricsQuery = `SELECT r.at, h.metrics FROM health_result h JOIN health_report r ON r.at = h.report_at
		WHERE h.check_id = $1 AND r.at >= $2 ORDER BY r.at`
	// Keep a year of history; older reports are dropped when a new one is saved.
	pruneHealthQuery = `DELETE FROM health_report WHERE at < $1`
)

// SaveHealthReport stores a report and its results in one transaction and returns the time
// it was stored under (moved by a millisecond if another report has the same time).
func (s *Store) SaveHealthReport(ctx context.Context, rec *HealthRecord) (time.Time, error) {
	at := rec.At.UnixMilli()
	err := s.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
		for {
			var n int
			if err := s.DB.QueryRow(ctx, `SELECT count(*) FROM health_report WHERE at = $1`, at).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				break
			}
			at++
		}
		if _, err := s.DB.Exec(ctx, insertHealthReportQuery, at, rec.Trigger, rec.Posted); err != nil {
			return err
		}
		for checkID, r := range rec.Results {
			items, _ := json.Marshal(r.Items)
			metrics, _ := json.Marshal(r.Metrics)
			if _, err := s.DB.Exec(ctx, insertHealthResultQuery, at, checkID, r.Status, r.Summary, string(items), string(metrics)); err != nil {
				return err
			}
		}
		_, err := s.DB.Exec(ctx, pruneHealthQuery, time.UnixMilli(at).AddDate(-1, 0, 0).UnixMilli())
		return err
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("save health report: %w", err)
	}
	return time.UnixMilli(at), nil
}

// LastHealthReport returns the newest report at or before a time (only posted ones if
// postedOnly), or nil when there is none.
func (s *Store) LastHealthReport(ctx context.Context, before time.Time, postedOnly bool) (*HealthRecord, error) {
	rec := &HealthRecord{Results: map[string]HealthResult{}}
	var at int64
	err := s.DB.QueryRow(ctx, lastHealthReportQuery, before.UnixMilli(), postedOnly).Scan(&at, &rec.Trigger, &rec.Posted)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("find last health report: %w", err)
	}
	rec.At = time.UnixMilli(at)
	rows, err := s.DB.Query(ctx, healthResultsQuery, at)
	err = dbutil.NewRowIterWithError(rows, func(row dbutil.Scannable) (struct{}, error) {
		var id, items, metrics string
		var r HealthResult
		if err := row.Scan(&id, &r.Status, &r.Summary, &items, &metrics); err != nil {
			return struct{}{}, err
		}
		_ = json.Unmarshal([]byte(items), &r.Items)
		_ = json.Unmarshal([]byte(metrics), &r.Metrics)
		rec.Results[id] = r
		return struct{}{}, nil
	}, err).Iter(func(struct{}) (bool, error) { return true, nil })
	if err != nil {
		return nil, fmt.Errorf("read health report: %w", err)
	}
	return rec, nil
}

// HealthMetric returns one check's metric over the reports since a time, oldest first.
func (s *Store) HealthMetric(ctx context.Context, checkID, key string, since time.Time) ([]MetricPoint, error) {
	rows, err := s.DB.Query(ctx, healthMetricsQuery, checkID, since.UnixMilli())
	var out []MetricPoint
	err = dbutil.NewRowIterWithError(rows, func(row dbutil.Scannable) (struct{}, error) {
		var at int64
		var raw string
		if err := row.Scan(&at, &raw); err != nil {
			return struct{}{}, err
		}
		var m map[string]float64
		_ = json.Unmarshal([]byte(raw), &m)
		if v, ok := m[key]; ok {
			out = append(out, MetricPoint{At: time.UnixMilli(at), Value: v})
		}
		return struct{}{}, nil
	}, err).Iter(func(struct{}) (bool, error) { return true, nil })
	if err != nil {
		return nil, fmt.Errorf("read health metric %s/%s: %w", checkID, key, err)
	}
	return out, nil
}
