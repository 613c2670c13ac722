package authcheck

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// TestAppendInput: a hand-written input line decodes to the same Input as encoding/json's,
// and JSON that is not valid is refused rather than spliced into the line.
func TestAppendInput(t *testing.T) {
	for _, in := range []Input{
		{EventID: "$a", Event: json.RawMessage(`{"type":"m.room.message","content":{"body":"x\n\"y\"<&>"}}`), Rejected: true, Check: true},
		{EventID: `$we"ird\id<>`, Event: json.RawMessage(`{ "spaced" : [1, 2.5e3, null, true] }`), Force: true, Check: true},
		{EventID: "$ctx", Event: json.RawMessage(`{"state_key":""}`)},
		{EventID: "$empty"},
	} {
		line, err := appendInput(nil, in)
		if err != nil {
			t.Fatalf("%s: %v", in.EventID, err)
		}
		if bytes.Count(line, []byte("\n")) != 1 || line[len(line)-1] != '\n' {
			t.Errorf("%s: not one line: %q", in.EventID, line)
		}
		std, _ := json.Marshal(in)
		var got, want Input
		if err = json.Unmarshal(line, &got); err != nil {
			t.Fatalf("%s: %v in %q", in.EventID, err, line)
		}
		_ = json.Unmarshal(std, &want)
		var gotEv, wantEv any
		_ = json.Unmarshal(got.Event, &gotEv)
		_ = json.Unmarshal(want.Event, &wantEv)
		got.Event, want.Event = nil, nil
		if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(gotEv, wantEv) {
			t.Errorf("%s: %q decodes differently from encoding/json's %q", in.EventID, line, std)
		}
	}
	for _, bad := range []string{`{"a":1},"check":true,"x":{`, `{"a":`, `nope`, "{\"a\":\"\x00\"}"} {
		if line, err := appendInput(nil, Input{EventID: "$bad", Event: json.RawMessage(bad)}); err == nil {
			t.Errorf("%q accepted: %q", bad, line)
		}
	}
}
