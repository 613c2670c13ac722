package health

import (
	"context"
	"fmt"

	"github.com/synapse-medic/medic/synapse"
)

// CheckRestoreHazards checks one database for what a careless restore leaves behind: a
// collation or ctype that is not C (Synapse refuses it unless allow_unsafe_locale is set,
// which risks broken indexes), tables and sequences owned by another role than Synapse's
// (medic connects as Synapse's role), and sequences behind the values in use (the next
// event would collide). It takes the database so a scratch database can be checked too.
func CheckRestoreHazards(ctx context.Context, db *synapse.DB, res *Result) error {
	loc, err := db.DatabaseLocale(ctx)
	if err != nil {
		return err
	}
	foreign, err := db.ForeignOwned(ctx)
	if err != nil {
		return err
	}
	seqs, err := db.Sequences(ctx)
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
	for _, s := range seqs {
		if s.Last < s.InUse {
			res.add("sequence "+s.Name, true, "sequence behind", s.Name, fmt.Sprint(s.Last), fmt.Sprintf("≥ %d", s.InUse))
			res.level("sequence "+s.Name, Critical)
			why = append(why, s.Name+" is behind its table")
		}
	}
	if len(why) == 0 {
		res.Summary = fmt.Sprintf("collation C, every table owned by %s, sequences ahead of their tables", loc.CurrentUser)
		return nil
	}
	res.Summary = fmt.Sprint(why[0])
	for _, w := range why[1:] {
		res.Summary += "; " + w
	}
	res.Hint = fmt.Sprintf("restore with `pg_restore --no-owner --role=%s` into a database created with `-E UTF8 --lc-collate=C --lc-ctype=C -T template0`; "+
		"`ALTER TABLE … OWNER TO %s`; `SELECT setval('<seq>', <in use>)` with Synapse stopped", loc.CurrentUser, loc.CurrentUser)
	return nil
}
