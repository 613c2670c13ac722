package synapse

import (
	"errors"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"maunium.net/go/mautrix"
)

// Remedy says what the admin should do about an error from Synapse's database or admin API,
// for the errors a newcomer's setup hits first; "" when it has nothing better than the
// error itself. The README's Troubleshooting section lists the same cases.
func Remedy(err error) string {
	if err == nil {
		return ""
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		switch pg.Code {
		case "42501": // insufficient_privilege
			return "the PostgreSQL role in `synapse.database` lacks a right this needs (" + pg.Message + "): grant it, as the README's Security model lists, or use a role that has it"
		case "28P01", "28000": // invalid_password, invalid_authorization_specification
			return "PostgreSQL refused the login in `synapse.database`: check its user and password (and pg_hba.conf for medic's host)"
		case "3D000": // invalid_catalog_name
			return "the database named in `synapse.database` does not exist: use the `database` of Synapse's homeserver.yaml"
		}
	}
	// A database that does not answer is UnreachableError's: one line that says what to do.
	var he mautrix.HTTPError
	var hp *mautrix.HTTPError
	if errors.As(err, &hp) && hp != nil {
		he = *hp
	} else if !errors.As(err, &he) {
		return ""
	}
	if he.Response != nil && he.Response.StatusCode == http.StatusForbidden &&
		he.Request != nil && strings.HasPrefix(he.Request.URL.Path, "/_synapse/admin/") {
		return "the bot account is not a Synapse server admin: make it one (in Synapse's database: `UPDATE users SET admin = 1 WHERE name = '<bot user ID>'`; for a new account, `register_new_matrix_user --admin`), then try again"
	}
	return ""
}
