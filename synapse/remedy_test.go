package synapse

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"maunium.net/go/mautrix"
)

func TestRemedy(t *testing.T) {
	admin := &http.Request{URL: &url.URL{Path: "/_synapse/admin/v1/federation/destinations"}}
	client := &http.Request{URL: &url.URL{Path: "/_matrix/client/v3/join/x"}}
	forbidden := &http.Response{StatusCode: http.StatusForbidden}
	for name, c := range map[string]struct {
		err  error
		want string
	}{
		"no rights":          {fmt.Errorf("un-reject: %w", &pgconn.PgError{Code: "42501", Message: "permission denied for table events"}), "permission denied for table events"},
		"bad password":       {&pgconn.PgError{Code: "28P01"}, "user and password"},
		"no database":        {&pgconn.PgError{Code: "3D000"}, "does not exist"},
		"other pg error":     {&pgconn.PgError{Code: "23505"}, ""},
		"not a server admin": {fmt.Errorf("list destinations: %w", mautrix.HTTPError{Request: admin, Response: forbidden}), "not a Synapse server admin"},
		"pointer form":       {&mautrix.HTTPError{Request: admin, Response: forbidden}, "not a Synapse server admin"},
		"client API 403":     {mautrix.HTTPError{Request: client, Response: forbidden}, ""},
		"nil":                {nil, ""},
	} {
		got := Remedy(c.err)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: Remedy = %q, want one with %q", name, got, c.want)
		}
	}
}
