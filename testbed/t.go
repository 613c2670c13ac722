package testbed

// T is what the testbed's helpers need of a test: *testing.T, *testing.B and testing.TB
// satisfy it, and so does Staging, which runs the same staging code outside `go test` (the
// demo, testbed/stage).
type T interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(fn func())
	TempDir() string
	Failed() bool
}
