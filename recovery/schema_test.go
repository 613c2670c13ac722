package recovery

import (
	"encoding/json"
	"testing"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/jobs"
)

// The operations that write Synapse's tables declare the schema they were tested on; those
// that go through Synapse's APIs declare none. (jobs.Manager.Register panics if a declared
// range could not be forced, so registering them checks that too.)
func TestOperationsDeclareTheirSchema(t *testing.T) {
	writers := map[string]*jobs.SchemaRange{
		"unreject":       (&Unrejecter{}).Operation().Schema,
		"import.history": (&HistoryImport{Config: config.Import{}}).Operation().Schema,
		"undo":           Undo(nil, nil, nil).Schema,
		"aftercare":      (&Aftercare{}).Operation().Schema,
	}
	for kind, r := range writers {
		if r == nil || r.Min != TestedSchema.Min || r.Max != TestedSchema.Max {
			t.Errorf("%s writes Synapse's tables but declares schema range %v, want %s", kind, r, TestedSchema)
		}
	}
	apis := map[string]*jobs.SchemaRange{
		"federation.reset": FederationReset(nil).Schema,
		"extremities.trim": ExtremitiesTrim(nil).Schema,
		"recover":          (&Rejoiner{}).Operation().Schema,
		"aftercare.online": (&AftercareOnline{}).Operation().Schema,
	}
	for kind, r := range apis {
		if r != nil {
			t.Errorf("%s changes Synapse through its APIs only, yet declares schema range %s", kind, r)
		}
	}
}

// --force-schema travels in the job's persisted arguments, and is left out when not given
// (jobs stored before it existed read the same).
func TestForceSchemaInArguments(t *testing.T) {
	args := UnrejectArgs{Room: "!r:x"}
	raw, _ := json.Marshal(args)
	if string(raw) != `{"room":"!r:x"}` {
		t.Errorf("unforced arguments: %s", raw)
	}
	args.ForceSchema = true
	raw, _ = json.Marshal(args)
	var back UnrejectArgs
	if err := json.Unmarshal(raw, &back); err != nil || !back.SchemaForced() || string(raw) != `{"force_schema":true,"room":"!r:x"}` {
		t.Errorf("forced arguments: %s → %+v, %v", raw, back, err)
	}
}
