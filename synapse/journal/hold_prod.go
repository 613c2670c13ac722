//go:build !medictest

package journal

// HoldPoint returns nil: the production build has no hold points (see HoldPointEnv).
func HoldPoint() CrashPoint { return nil }
