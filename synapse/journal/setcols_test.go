package journal

import (
	"slices"
	"testing"
)

func TestSetColumns(t *testing.T) {
	for set, want := range map[string][]string{
		"rejection_reason = NULL":                    {"rejection_reason"},
		"outlier = FALSE, min_depth = $2":            {"outlier", "min_depth"},
		`"a" = coalesce(b, 'x,y'), c = f(1, (2, 3))`: {"a", "c"},
		"x = 'it''s, fine', y = 1":                   {"x", "y"},
	} {
		got, err := setColumns(set)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("setColumns(%q) = %v, %v; want %v", set, got, err, want)
		}
	}
	for _, bad := range []string{"", "= 1", "a.b = 1", "f(a) = 1", "a = 1,", "no assignment"} {
		if got, err := setColumns(bad); err == nil {
			t.Errorf("setColumns(%q) = %v, want an error", bad, got)
		}
	}
}
