package health

import (
	"fmt"
	"html"
	"slices"
	"strings"
	"time"
)

// maxRows bounds the rows a detail shows (a chat message has a size limit).
const maxRows = 50

var statusColor = map[Status]string{OK: "#2e7d32", Warn: "#b26a00", Critical: "#c62828", Skipped: "#757575"}

// Headline is the report's first line.
func (rep *Report) Headline() string {
	c := rep.Counts()
	return fmt.Sprintf("%s Health of %s: %d critical, %d warning, %d ok", rep.Worst().Icon(), rep.Server, c[Critical], c[Warn], c[OK])
}

func (rep *Report) comparedTo() string {
	var parts []string
	if rep.Previous != nil {
		parts = append(parts, "last report "+rep.Previous.At.UTC().Format("2006-01-02 15:04")+" UTC")
	}
	if rep.Yesterday != nil {
		parts = append(parts, "yesterday's "+rep.Yesterday.At.UTC().Format("2006-01-02 15:04"))
	}
	if len(parts) == 0 {
		return "first report"
	}
	return "compared with the " + strings.Join(parts, " and ")
}

func (r *Result) newSince(rep *Report) string {
	var notes []string
	if len(r.New) > 0 {
		notes = append(notes, fmt.Sprintf("%d new since last report", len(r.New)))
	}
	if rep.Yesterday != nil {
		if old, ok := rep.Yesterday.Results[r.Check]; ok {
			n := 0
			for _, it := range r.Items {
				if !slices.Contains(old.Items, it) {
					n++
				}
			}
			if n > 0 {
				notes = append(notes, fmt.Sprintf("%d new since yesterday", n))
			}
		}
	}
	switch r.Changed {
	case "worse":
		notes = append(notes, "worse than last report")
	case "better":
		notes = append(notes, "better than last report")
	}
	return strings.Join(notes, ", ")
}

// Plain renders the report as plain text (the body for clients without HTML, and the terminal).
func (rep *Report) Plain(pfx string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n%s UTC, %s\n\n", rep.Headline(), rep.At.UTC().Format(time.DateTime), rep.comparedTo())
	for _, r := range rep.Results {
		fmt.Fprintf(&b, "%s %-20s %-8s %s", r.Status.Icon(), r.Title, strings.ToUpper(r.Status.String()), r.Summary)
		if n := r.newSince(rep); n != "" {
			fmt.Fprintf(&b, " (%s)", n)
		}
		b.WriteString("\n")
		if r.Hint != "" && r.Status > OK {
			fmt.Fprintf(&b, "   fix: %s\n", r.Hint)
		}
	}
	fmt.Fprintf(&b, "\nDetails: %shealth <check> (%s)\n", pfx, strings.Join(IDs(), ", "))
	return b.String()
}

// HTML renders the report as a table that reads well in Element.
func (rep *Report) HTML(pfx string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<h4>%s</h4><p>%s UTC, %s</p>", esc(rep.Headline()), rep.At.UTC().Format(time.DateTime), esc(rep.comparedTo()))
	b.WriteString("<table><thead><tr><th></th><th>check</th><th>status</th><th>why</th><th>fix</th></tr></thead><tbody>")
	for _, r := range rep.Results {
		why := esc(r.Summary)
		if n := r.newSince(rep); n != "" {
			why += " <em>(" + esc(n) + ")</em>"
		}
		hint := ""
		if r.Status > OK {
			hint = code(r.Hint)
		}
		fmt.Fprintf(&b, "<tr><td>%s</td><td><code>%s</code></td><td><font data-mx-color=\"%s\"><b>%s</b></font></td><td>%s</td><td>%s</td></tr>",
			r.Status.Icon(), esc(r.Check), statusColor[r.Status], strings.ToUpper(r.Status.String()), why, hint)
	}
	fmt.Fprintf(&b, "</tbody></table><p>Details: <code>%shealth &lt;check&gt;</code></p>", esc(pfx))
	return b.String()
}

// DetailPlain renders one check with its rows as plain text.
func (r *Result) DetailPlain(rep *Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %s — %s\n", r.Status.Icon(), r.Title, strings.ToUpper(r.Status.String()), r.Summary)
	if n := r.newSince(rep); n != "" {
		fmt.Fprintf(&b, "(%s)\n", n)
	}
	if r.Hint != "" && r.Status > OK {
		fmt.Fprintf(&b, "fix: %s\n", r.Hint)
	}
	if len(r.Rows) > 0 {
		b.WriteString("\n" + strings.Join(r.Columns, " | ") + "\n")
		for i, row := range r.Rows {
			if i == maxRows {
				fmt.Fprintf(&b, "… %d more\n", len(r.Rows)-maxRows)
				break
			}
			mark := ""
			if slices.Contains(r.New, r.Keys[i]) {
				mark = " 🆕"
			}
			b.WriteString(strings.Join(row, " | ") + mark + "\n")
		}
	}
	return b.String()
}

// DetailHTML renders one check with its rows as an HTML table.
func (r *Result) DetailHTML(rep *Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<h4>%s %s: <font data-mx-color=\"%s\">%s</font></h4><p>%s",
		r.Status.Icon(), esc(r.Title), statusColor[r.Status], strings.ToUpper(r.Status.String()), esc(r.Summary))
	if n := r.newSince(rep); n != "" {
		fmt.Fprintf(&b, " <em>(%s)</em>", esc(n))
	}
	b.WriteString("</p>")
	if r.Hint != "" && r.Status > OK {
		fmt.Fprintf(&b, "<p>Fix: %s</p>", code(r.Hint))
	}
	if len(r.Rows) > 0 {
		b.WriteString("<table><thead><tr>")
		for _, c := range r.Columns {
			fmt.Fprintf(&b, "<th>%s</th>", esc(c))
		}
		b.WriteString("</tr></thead><tbody>")
		for i, row := range r.Rows {
			if i == maxRows {
				fmt.Fprintf(&b, "<tr><td colspan=\"%d\">… %d more</td></tr>", len(r.Columns), len(r.Rows)-maxRows)
				break
			}
			b.WriteString("<tr>")
			for j, cell := range row {
				if j == 0 && slices.Contains(r.New, r.Keys[i]) {
					cell += " 🆕"
				}
				fmt.Fprintf(&b, "<td>%s</td>", esc(cell))
			}
			b.WriteString("</tr>")
		}
		b.WriteString("</tbody></table>")
	}
	return b.String()
}

func esc(s string) string { return html.EscapeString(s) }

// code renders `backticked` parts of a hint as <code>.
func code(s string) string {
	parts := strings.Split(s, "`")
	var b strings.Builder
	for i, p := range parts {
		if i%2 == 1 {
			b.WriteString("<code>" + esc(p) + "</code>")
		} else {
			b.WriteString(esc(p))
		}
	}
	return b.String()
}
