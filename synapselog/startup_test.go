package synapselog

import (
	"strings"
	"testing"
)

// As Synapse 1.160 logged it on the testbed, for a sequence behind stream_positions.
const failedStart = `2026-12-02 10:40:54,536 - synapse.config.logger - 377 - WARNING - main - ***** STARTING SERVER *****
2026-12-02 10:40:55,642 - synapse.storage.util.sequence - 171 - WARNING - main - Postgres sequence device_lists_sequence is behind table device_lists_stream: 1 < 11. Updating sequence.
2026-12-02 10:40:55,650 - synapse.app._base - 251 - ERROR - main - Exception during startup
Traceback (most recent call last):
  File "/usr/lib/python3/dist-packages/synapse/storage/util/sequence.py", line 192, in check_consistency
    raise IncorrectDatabaseSetup(
    ...<2 lines>...
    )
synapse.storage.engines._base.IncorrectDatabaseSetup: 
Postgres sequence 'device_lists_sequence' is inconsistent with associated stream position
of 'device_lists_stream' in the 'stream_positions' table.

This is likely a programming error and should be reported at
`

func TestStartupFailure(t *testing.T) {
	got := startupFailure(strings.NewReader(failedStart))
	want := "IncorrectDatabaseSetup: Postgres sequence 'device_lists_sequence' is inconsistent with associated stream position of 'device_lists_stream' in the 'stream_positions' table."
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	// A later start that did not fail says nothing.
	ok := failedStart + "2026-12-02 10:41:00,000 - synapse.config.logger - 377 - WARNING - main - ***** STARTING SERVER *****\n" +
		"2026-12-02 10:41:02,000 - synapse.app.homeserver - 1 - INFO - main - Synapse now listening on TCP port 8008\n"
	if got := startupFailure(strings.NewReader(ok)); got != "" {
		t.Errorf("after a good start: %q", got)
	}
}

func FuzzStartupFailure(f *testing.F) {
	f.Add(failedStart)
	f.Add("x - Exception during startup\nFoo\n\n")
	f.Fuzz(func(t *testing.T, s string) {
		_ = startupFailure(strings.NewReader(s))
	})
}
