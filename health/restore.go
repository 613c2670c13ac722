package health

import (
	"context"
	"fmt"

	"github.com/synapse-medic/medic/synapse"
)

// CheckRestoreHazards checks one database for what a careless restore leaves behind: a
// collation or ctype that is not C (Synapse refuses it unless allow_unsafe_locale is set,
// which risks broken indexes), tables and sequences owned by another role than Synapse's
// (medic connects as Synapse's role), and stream sequences behind the values in use or
// behind their stream's stream_positions entry (every sequence Synapse checks at start-up:
// the next id would collide, or Synapse refuses to start). It takes the database so a scratch
// database can be checked too. The fix it offers is the aftercare (recovery.Aftercare).
func CheckRestoreHazards(ctx context.Context, db *synapse.DB, pfx string, res *Result) error {
	loc, err := db.DatabaseLocale(ctx)
	if err != nil {
		return err
	}
	foreign, err := db.ForeignOwned(ctx)
	if err != nil {
		return err
	}
	lags, err := db.SequenceLags(ctx, true, nil)
	if err != nil {
		return err
	}
	res.Columns = []string{"hazard", "object", "found", "expected"}
	var why []string
	if loc.Collate != "C" || loc.Ctype != "C" {
		res.add("collation", true, "locale", "database", fmt.Sprintf("collate %s, ctype %s", loc.Collate, loc.Ctype), "C / C")
		res.level("collation", Critical)
		why = append(why, fmt.Sprintf("collation %s/%s is not C", loc.Collate, loc.Ctype))
	} else {
		res.add("collation", false, "locale", "database", "C / C", "C / C")
	}
	for _, o := range foreign {
		res.add("owner "+o.Name, true, "owner", o.Kind+" "+o.Name, o.Owner, loc.CurrentUser)
		res.level("owner "+o.Name, Critical)
	}
	if len(foreign) > 0 {
		why = append(why, fmt.Sprintf("%d table(s)/sequence(s) not owned by %s", len(foreign), loc.CurrentUser))
	}
	for _, l := range lags {
		key := "sequence " + l.Name
		if l.StopsSynapse() {
			res.add(key, true, "sequence behind stream_positions", l.Name, fmt.Sprint(l.Last), fmt.Sprintf("≥ %d (stream_positions %s)", l.Want(), l.Stream))
			why = append(why, l.Name+" is behind stream_positions (Synapse refuses to start)")
		} else {
			res.add(key, true, "sequence behind", l.Name, fmt.Sprint(l.Last), fmt.Sprintf("≥ %d (%s)", l.Want(), l.TableName))
			why = append(why, l.Name+" is behind its table")
		}
		res.level(key, Critical)
	}
	if len(why) == 0 {
		res.Summary = fmt.Sprintf("collation C, every table owned by %s, sequences ahead of their tables and stream positions", loc.CurrentUser)
		return nil
	}
	res.Summary = fmt.Sprint(why[0])
	for _, w := range why[1:] {
		res.Summary += "; " + w
	}
	res.Hint = fmt.Sprintf("with Synapse stopped, `medic exec aftercare` on the host sets the sequences forward and gives the objects to %s "+
		"(and after a restore deletes one-time keys, marks remote device lists for resync, clears federation backoff), then starts Synapse "+
		"(by hand: `SELECT setval('<sequence>', <expected>)`, `ALTER … OWNER TO %s`); while it runs, `%saftercare` does the online part. A collation other than C has no in-place fix: "+
		"dump, and restore with `pg_restore --no-owner --role=%s` into a database created with `-E UTF8 --lc-collate=C --lc-ctype=C -T template0`",
		loc.CurrentUser, loc.CurrentUser, pfx, loc.CurrentUser)
	return nil
}
