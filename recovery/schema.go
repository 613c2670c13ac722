package recovery

import (
	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/synapse"
)

// TestedSchema is the Synapse schema the repairs that write Synapse's tables directly
// (un-reject, import, undo) were tested on: the testbed's Synapse 1.160, whose database is
// at schema_version 94 (schema_compat_version 84). Each of those operations declares it as
// its Schema, so the job manager refuses them on any other schema unless --force-schema is
// given. Widen it only after running their testbed tests on the other Synapse.
//
// The repairs that go through Synapse's APIs (federation reset, extremities trim, recover)
// declare none: Synapse keeps its own tables consistent there, on any version.
//
// MaxDeltas are 1.160's delta files at schema 94 (as the testbed's applied_schema_deltas lists
// them): a later Synapse that adds deltas under 94 without bumping the version is untested too.
var TestedSchema = jobs.SchemaRange{Min: 94, Max: 94, Synapse: "Synapse 1.160", MaxDeltas: []string{
	"94/01_redactions_recheck.sql",
	"94/02_redactions_recheck_bg_update.sql",
	"94/03_device_lists_room_timestamp.sql",
	"94/03_quarantined_media_tracking.sql",
	"94/03_quarantined_media_tracking_seq.sql.postgres",
	"94/03_state_dag_fwd_extrems.sql",
	"94/04_device_lists_changes_max_pruned.sql",
	"94/05_rerun_flag_existing_quarantined_media.sql",
	"94/06_sliding_sync_connections_last_used_ts_index.sql",
	"94/07_profile_updates.sql",
	"94/07_profile_updates_seq.sql.postgres",
	"94/07_sliding_sync_lazy_members_position_index.sql",
	"94/08_device_lists_changes_in_room_unconverted_idx.sql",
}}

// SchemaState is Synapse's schema record as a SchemaRange judges it.
func SchemaState(s *synapse.Schema) jobs.SchemaState {
	return jobs.SchemaState{Version: s.Version, Deltas: s.DeltasAt(s.Version)}
}
