package terminal

import (
	"context"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"

	"github.com/synapse-medic/medic/app"
	"github.com/synapse-medic/medic/store/storetest"
	"github.com/synapse-medic/medic/testbed"
)

// newTestRunner returns a runner whose admin API points at a closed port: commands that need
// Synapse fail fast with a message, which is what this unit test wants to see handled.
func newTestRunner(t testing.TB, out *testbed.Buffer) *Runner {
	st, cfg := storetest.Open(t)
	cli, err := mautrix.NewClient("http://127.0.0.1:1", "", "")
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(context.Background(), cfg, st, cli, "test", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return NewRunner(a, strings.NewReader(""), out, false)
}

func TestRunOutcomes(t *testing.T) {
	out := &testbed.Buffer{}
	r := newTestRunner(t, out)
	ctx := context.Background()
	for _, tc := range []struct {
		line    string
		wantErr bool
		want    string
	}{
		{"!ping", false, "Pong!"},
		{"ping", false, "Pong!"},
		{"!help", false, "!version"},
		{"!help version", false, "server_version"},
		{"!hlep", true, "Did you mean `!help`?"},
		{"!nosuchthing", true, "Unknown command `!nosuchthing`"},
		{"!help nosuch", true, "There is no command"},
		{"!version", true, "Could not get Synapse's version"},
		{"!approve nosuchjob", true, "There is no job `nosuchjob`"},
		{"!approve", true, "missing value for required parameter job"},
		{"!jobs", false, "No jobs yet."},
		{"!job zzz", true, "There is no job"},
		{"!federation reset", true, "missing value for required parameter server"},
		{"!federation", true, "Could not list destinations"},
		{"!extremities", true, "This needs Synapse's database"},
		{"!extremities trim", true, "missing value for required parameter room"},
	} {
		out.Reset()
		err := r.Run(ctx, tc.line)
		if (err != nil) != tc.wantErr {
			t.Errorf("%q: err=%v, want error=%v", tc.line, err, tc.wantErr)
		}
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("%q printed %q, want it to contain %q", tc.line, out.String(), tc.want)
		}
	}
}

// FuzzRun feeds arbitrary command lines through the whole command path (mautrix-go's
// parser, subcommand lookup, argument parsing, our handlers): no input may panic, inside or
// outside a handler. Run bounded by `make fuzz`; the seeds run with every `go test`.
func FuzzRun(f *testing.F) {
	for _, seed := range []string{"!help", "!help ping", "!ping extra args", "!", "!!", "!HELP", "!help \"unterminated",
		"!help --command=x", "!help --command", "! help", "!approve abc", "!cancel", "!job x y", "!federation reset a b", "!pnig", "!help \x00", "!help <a> <b", "!versio n", "!ping\n!help"} {
		f.Add(seed)
	}
	out := &testbed.Buffer{}
	r := newTestRunner(f, out)
	f.Fuzz(func(t *testing.T, line string) {
		logs := &testbed.Buffer{}
		out.Reset()
		ctx := zerolog.New(logs).WithContext(context.Background())
		_ = r.Run(ctx, line)
		if strings.Contains(strings.ToLower(logs.String()), "panic") {
			t.Fatalf("command %q panicked: %s", line, logs.String())
		}
	})
}
