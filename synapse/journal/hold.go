package journal

// HoldPointEnv names a point at which medic stops and waits to be killed. It exists for the
// kill tests (cmd/medic/kill_test.go), which must stop medic at exact places inside and
// around a repair's transaction. Only a medic built with the medictest tag reads it (the
// tests build it with testbed.MedicBinary): in the production binary HoldPoint is nil.
const HoldPointEnv = "MEDIC_TEST_HOLD_AT"
