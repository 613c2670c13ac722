package mdtext_test

import (
	"html"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"maunium.net/go/mautrix/format"

	"github.com/synapse-medic/medic/mdtext"
)

var nasty = []string{
	"**[click](https://evil)**",
	"<https://evil> <b>bold</b> &#42;entity&amp;",
	"_em_ ~~strike~~ ~s~ ||spoiler|| `code` ``two``", "a_b_ c__d__e _x_y __z__", "snake_case_name_",
	"# heading", "> quote", "- item", "+ item", "1. item", "12) item", "=====",
	"back\\slash\\", "![img](https://evil/x.png)", "[ref]: https://evil",
	"line\nbreak\r\nand\rmore", "  padded  ", "m.room.power_levels", "a|b|c",
	"`", "``", "x`", "`x", "!room:hs1.test", "$event_id:hs2.test", "@user:evil", "",
}

var tag = regexp.MustCompile(`</?([a-z0-9]+)[^>]*>`)

// render renders md as medic does and returns the HTML tags it produced and its text.
func render(md string) (tags []string, text string) {
	c := format.RenderMarkdown(md, true, false)
	out := c.FormattedBody
	if out == "" { // no formatting at all: the body is the text
		return nil, c.Body
	}
	for _, m := range tag.FindAllStringSubmatch(out, -1) {
		tags = append(tags, m[1])
	}
	return tags, html.UnescapeString(tag.ReplaceAllString(out, ""))
}

func normalize(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ", "\x00", "\uFFFD").Replace(s)
	return strings.TrimSpace(s)
}

func checkText(t *testing.T, s string) {
	t.Helper()
	tags, text := render("x " + mdtext.Text(s))
	if len(tags) > 0 || text != strings.TrimSpace("x "+normalize(s)) {
		t.Errorf("Text(%q) = %q renders tags %v, text %q", s, mdtext.Text(s), tags, text)
	}
	// At the start of a line too.
	if tags, text = render(mdtext.Text(s)); len(tags) > 0 || text != normalize(s) {
		t.Errorf("Text(%q) = %q at a line start renders tags %v, text %q", s, mdtext.Text(s), tags, text)
	}
}

func TestText(t *testing.T) {
	for _, s := range nasty {
		checkText(t, s)
	}
	// Plain names stay as they are (the Markdown source is also the plain-text body).
	for _, s := range []string{"Room of hs1.test:8481 (old)", "café! #1", "403 M_FORBIDDEN: @some_user:x (100 > 0)"} {
		if got := mdtext.Text(s); got != s {
			t.Errorf("Text(%q) = %q, want it unchanged", s, got)
		}
	}
}

func TestCode(t *testing.T) {
	for _, s := range nasty {
		want := normalize(s)
		tags, text := render("x " + mdtext.Code(s))
		if !strings.Contains(s, "|") && want != "" && (len(tags) != 2 || tags[0] != "code") {
			t.Errorf("Code(%q) = %q renders tags %v, want one code span", s, mdtext.Code(s), tags)
		}
		if strings.TrimSpace(strings.TrimPrefix(text, "x")) != want {
			t.Errorf("Code(%q) = %q renders text %q", s, mdtext.Code(s), text)
		}
	}
}

// TestTableCell: a cell holding remote text stays one cell, whatever the text holds.
func TestTableCell(t *testing.T) {
	for _, s := range nasty {
		md := "| a | b | c |\n|---|---|---|\n| " + mdtext.Text(s) + " | " + mdtext.Code(s) + " | end |\n"
		out := format.RenderMarkdown(md, true, false).FormattedBody
		if n := strings.Count(out, "<td>"); n != 3 || !strings.Contains(out, "<td>end</td>") {
			t.Errorf("table row with %q:\n%s", s, out)
		}
		for _, bad := range []string{"<a ", "<strong>", "<em>", "<del>", "<span", "<img", "<h1>", "<blockquote>", "<li>"} {
			if strings.Contains(out, bad) {
				t.Errorf("table row with %q renders %s:\n%s", s, bad, out)
			}
		}
	}
}

func FuzzText(f *testing.F) {
	for _, s := range nasty {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		checkText(t, s)
	})
}
