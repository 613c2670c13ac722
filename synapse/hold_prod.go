//go:build !medictest

package synapse

// HoldPoint returns nil: the production build has no hold points (see HoldPointEnv).
func HoldPoint() CrashPoint { return nil }
