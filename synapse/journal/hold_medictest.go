//go:build medictest

package journal

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
)

// HoldPoint returns the CrashPoint for HoldPointEnv, or nil when it is unset. This is the
// test build's (tag medictest); the production build's returns nil.
func HoldPoint() CrashPoint {
	want := os.Getenv(HoldPointEnv)
	if want == "" {
		return nil
	}
	return func(ctx context.Context, tx pgx.Tx, point string) error {
		if point == want {
			fmt.Fprintf(os.Stderr, "medic: holding at %q\n", point)
			time.Sleep(time.Hour)
		}
		return nil
	}
}
