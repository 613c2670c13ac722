// Package mdtext puts text medic does not control into the Markdown it posts, so that it
// renders as the text it is. Room names, event types, state keys, user, room, event and
// server IDs, rejection reasons and remote servers' error messages all come from other
// servers (or from logs they can write into): a room named `**[click](https://evil)**` must
// show those characters, not a bold link.
//
// Text is for running text, Code for identifiers shown as code. Both give one line, safe
// anywhere inline: in a sentence, a list item, bold text, or a table cell. Markdown that
// medic writes itself needs neither.
package mdtext

import (
	"strings"

	"maunium.net/go/mautrix/format"
)

// special are the characters with an inline meaning in the Markdown medic renders
// (CommonMark with GFM tables and strikethrough, and mautrix's ||spoilers||): escapes,
// code, emphasis, links and images, autolinks and HTML, entities, strikethrough, and table
// cells and spoilers. A backslash makes each one literal. (">" means something only at the
// start of a line, handled there.)
const special = "\\`*_[]<&~|"

// Text escapes s so that Markdown shows it literally. Line breaks become spaces (a name
// cannot end a table row or start a block), surrounding spaces go (HTML would not show them),
// and a first character that could open a block (heading, quote, list) is escaped too, so
// the result is safe even at the start of a line.
func Text(s string) string {
	s = strings.TrimSpace(oneLine(s))
	var b strings.Builder
	b.Grow(len(s) + 8)
	prev := ' '
	for i, r := range s {
		switch {
		case r == '_' && alnum(prev) && i+1 < len(s) && alnum(rune(s[i+1])):
			// Inside a word (M_FORBIDDEN, power_levels) "_" cannot open or close emphasis:
			// left as it is, so IDs and error codes read (and copy) unchanged.
		case strings.ContainsRune(special, r) || (i == 0 && strings.ContainsRune("#>+-=", r)):
			b.WriteByte('\\')
		}
		b.WriteRune(r)
		prev = r
	}
	out := b.String()
	// "1. " or "1) " at the start would open an ordered list.
	if n := leadingDigits(out); n > 0 && n < len(out) && (out[n] == '.' || out[n] == ')') {
		out = out[:n] + "\\" + out[n:]
	}
	return out
}

// Code shows s as inline code (for IDs, event types, state keys): in a code span with
// enough backticks that none in s can close it (mautrix's format.SafeMarkdownCode; an empty
// s gives an empty-looking span). A pipe cannot be kept literal inside a code span in a
// table cell and outside one alike, so s holding a pipe is shown as escaped text instead.
func Code[T ~string](s T) string {
	str := oneLine(string(s))
	if strings.Contains(str, "|") {
		return Text(str)
	}
	return format.SafeMarkdownCode(str)
}

// Codes is Code of each, joined by ", ".
func Codes[T ~string](list []T) string {
	parts := make([]string, len(list))
	for i, s := range list {
		parts[i] = Code(s)
	}
	return strings.Join(parts, ", ")
}

func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ").Replace(s)
}

// alnum is an ASCII letter or digit (around "_", anything else may be punctuation to
// CommonMark's flanking rules).
func alnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

func leadingDigits(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}
