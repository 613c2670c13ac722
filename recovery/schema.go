package recovery

import "github.com/synapse-medic/medic/jobs"

// TestedSchema is the Synapse schema the repairs that write Synapse's tables directly
// (un-reject, import, undo) were tested on: the testbed's Synapse 1.160, whose database is
// at schema_version 94 (schema_compat_version 84). Each of those operations declares it as
// its Schema, so the job manager refuses them on any other schema unless --force-schema is
// given. Widen it only after running their testbed tests on the other Synapse.
//
// The repairs that go through Synapse's APIs (federation reset, extremities trim, recover)
// declare none: Synapse keeps its own tables consistent there, on any version.
var TestedSchema = jobs.SchemaRange{Min: 94, Max: 94, Synapse: "Synapse 1.160"}
