package keepalived

import (
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// This file turns keepalived.conf text into a tree of statements, the way
// keepalived's lib/parser.c read_line and alloc_strvec see it:
//
//   - "@id line" / "@^id line" conditional lines (kept when the config id
//     matches / does not match);
//   - comments: '#' or '!' outside double quotes end the line; "\#" and
//     "\!" outside quotes are a literal '#' / '!';
//   - "$NAME=value" definitions (continued with a trailing '\') and the
//     substitution of $NAME and ${NAME};
//   - include FILE (and includer/includea/includew/includem/includeb):
//     globs and csh braces, relative to the including file's directory;
//   - '{' and '}' outside quotes split a physical line into logical lines,
//     so "url { path / }" is the same as three lines;
//   - words are separated by blanks; "a quoted string" is one word without
//     its quotes.

const (
	maxIncludeDepth = 32
	maxLine         = 1 << 16 // bound on a line after $ substitution
)

// line is one logical line.
type line struct {
	pos   Pos
	words []string
}

// node is a statement with, when the next logical line was '{', the block
// that follows it.
type node struct {
	pos      Pos
	words    []string
	hasBlock bool
	block    []*node
	end      Pos // the line of the closing '}'
}

func (n *node) arg(i int) string {
	if i < len(n.words) {
		return n.words[i]
	}
	return ""
}

type reader struct {
	fsys     fs.FS
	display  func(string) string
	configID string
	defs     map[string]string
	lines    []line
	diags    []Diagnostic
	depth    int
	files    int // files read
	unclosed int // blocks still open at the end
}

func (r *reader) report(pos Pos, sev Severity, format string, a ...any) {
	r.diags = append(r.diags, Diagnostic{Pos: pos, Severity: sev, Msg: fmt.Sprintf(format, a...)})
}

// readFile reads one file (name is a path inside r.fsys) and everything it
// includes.
func (r *reader) readFile(name string, data []byte) {
	r.files++
	file := r.display(name)
	phys := strings.Split(string(data), "\n")
	if len(phys) > 0 && phys[len(phys)-1] == "" {
		phys = phys[:len(phys)-1]
	}
	for i := 0; i < len(phys); i++ {
		pos := Pos{File: file, Line: i + 1}
		text := strings.TrimSuffix(phys[i], "\r")
		if strings.IndexByte(text, 0) >= 0 {
			r.report(pos, FixedUp, "configuration appears to have embedded NULs - ignoring line")
			continue
		}
		text, ok := r.conditional(text)
		if !ok {
			continue
		}
		text, cont := r.stripComment(pos, text)
		// A definition may continue over several lines ending in '\'.
		if strings.HasPrefix(text, "$") && isDefinition(text) {
			for cont && i+1 < len(phys) {
				i++
				next, _ := r.conditional(strings.TrimSuffix(phys[i], "\r"))
				var more string
				more, cont = r.stripComment(Pos{File: file, Line: i + 1}, next)
				text += "\n" + more
			}
			r.define(text)
			continue
		}
		if cont {
			text += `\`
		}
		if text == "" {
			continue
		}
		text = r.substitute(text)
		if strings.HasPrefix(text, "~SEQ") || strings.HasPrefix(text, "~LST") {
			r.report(pos, Fatal, "gvs: %s lines are not supported - '%s'", text[:4], text)
			continue
		}
		if r.include(pos, name, text) {
			continue
		}
		r.split(pos, text)
	}
}

// conditional applies "@id" / "@^id" prefixes.
func (r *reader) conditional(text string) (string, bool) {
	t := strings.TrimLeft(text, " \t")
	if !strings.HasPrefix(t, "@") {
		return text, true
	}
	t = t[1:]
	neg := strings.HasPrefix(t, "^")
	if neg {
		t = t[1:]
	}
	end := strings.IndexAny(t, " \t")
	if end < 0 {
		end = len(t)
	}
	id, rest := t[:end], t[end:]
	if (id == r.configID) == neg {
		return "", false
	}
	return rest, true
}

// stripComment removes leading blanks, the comment and trailing blanks;
// cont reports a trailing '\' (a continued definition).
func (r *reader) stripComment(pos Pos, s string) (string, bool) {
	s = strings.TrimLeft(s, " \t")
	var b strings.Builder
	quote, cont := false, false
loop:
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			quote = !quote
		case c == '\\':
			if i+1 == len(s) {
				cont = true
				break loop
			}
			if !quote && (s[i+1] == '#' || s[i+1] == '!') {
				b.WriteByte(s[i+1])
				i++
				continue
			}
			b.WriteByte(c)
			b.WriteByte(s[i+1])
			i++
			continue
		case !quote && (c == '#' || c == '!'):
			break loop
		}
		b.WriteByte(c)
	}
	out := b.String()
	if quote {
		r.report(pos, FixedUp, "Unterminated quote '%s'", out)
	}
	return strings.TrimRight(out, " \t"), cont
}

func isDefinition(s string) bool {
	eq := strings.IndexByte(s, '=')
	return eq > 1 && !strings.ContainsAny(s[1:eq], " \t${}")
}

func (r *reader) define(s string) {
	eq := strings.IndexByte(s, '=')
	name := s[1:eq]
	val := strings.TrimLeft(s[eq+1:], " \t")
	if r.defs == nil {
		r.defs = map[string]string{}
	}
	r.defs[name] = val
}

// substitute replaces $NAME (followed by a blank or the end) and ${NAME}
// with their definitions, repeatedly; undefined names stay as written.
func (r *reader) substitute(s string) string {
	if len(r.defs) == 0 || !strings.Contains(s, "$") {
		return s
	}
	for round := 0; round < 16; round++ {
		changed := false
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			if s[i] != '$' {
				b.WriteByte(s[i])
				continue
			}
			var name string
			var end int
			if i+1 < len(s) && s[i+1] == '{' {
				j := strings.IndexByte(s[i+2:], '}')
				if j < 0 {
					b.WriteByte(s[i])
					continue
				}
				name, end = s[i+2:i+2+j], i+2+j+1
			} else {
				j := strings.IndexAny(s[i+1:], " \t")
				if j < 0 {
					j = len(s) - i - 1
				}
				name, end = s[i+1:i+1+j], i+1+j
			}
			v, ok := r.defs[name]
			if !ok || name == "" {
				b.WriteByte(s[i])
				continue
			}
			b.WriteString(v)
			i = end - 1
			changed = true
		}
		s = b.String()
		if len(s) > maxLine {
			return s[:maxLine]
		}
		if !changed {
			break
		}
	}
	return s
}

// include handles an include line; it reports whether text was one.
func (r *reader) include(pos Pos, cur, text string) bool {
	if !strings.HasPrefix(text, "include") || len(text) < 8 {
		return false
	}
	required := false
	rest := text[7:]
	switch {
	case rest[0] == ' ' || rest[0] == '\t':
	case len(rest) > 1 && strings.IndexByte("rawmb", rest[0]) >= 0 && (rest[1] == ' ' || rest[1] == '\t'):
		// includer and friends make a missing or unreadable file fatal;
		// their other checks (permissions, ownership) are not made.
		required = true
		rest = rest[1:]
	default:
		return false
	}
	pattern := strings.TrimLeft(rest, " \t")
	if r.depth >= maxIncludeDepth {
		r.report(pos, Fatal, "gvs: include nesting deeper than %d at '%s'", maxIncludeDepth, pattern)
		return true
	}
	var p string
	if strings.HasPrefix(pattern, "/") {
		p = strings.TrimLeft(pattern, "/")
	} else {
		p = path.Join(path.Dir(cur), pattern)
	}
	var matches []string
	for _, q := range expandBraces(p) {
		m, err := fs.Glob(r.fsys, q)
		if err != nil {
			continue
		}
		matches = append(matches, m...)
	}
	if len(matches) == 0 {
		sev := Notice
		if required {
			sev = Fatal
		}
		r.report(pos, sev, "%s - no matching file", pattern)
		return true
	}
	for _, m := range matches {
		data, err := fs.ReadFile(r.fsys, m)
		if err != nil {
			sev := Notice
			if required {
				sev = Fatal
			}
			r.report(pos, sev, "Configuration file '%s' open problem (%s) - skipping", r.display(m), errText(err))
			continue
		}
		r.depth++
		r.readFile(m, data)
		r.depth--
	}
	return true
}

func errText(err error) string {
	if pe, ok := err.(*fs.PathError); ok {
		err = pe.Err
	}
	s := err.Error()
	if s == "" {
		return s
	}
	// strerror capitalises: "no such file or directory" -> "No such file or directory".
	return strings.ToUpper(s[:1]) + s[1:]
}

// expandBraces expands csh-style {a,b} alternatives (GLOB_BRACE).
func expandBraces(p string) []string {
	open := -1
	depth := 0
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '{':
			if depth == 0 {
				open = i
			}
			depth++
		case '}':
			if depth == 0 {
				continue
			}
			depth--
			if depth == 0 {
				var out []string
				start := open + 1
				d := 0
				var alts []string
				for j := open + 1; j < i; j++ {
					switch p[j] {
					case '{':
						d++
					case '}':
						d--
					case ',':
						if d == 0 {
							alts = append(alts, p[start:j])
							start = j + 1
						}
					}
				}
				alts = append(alts, p[start:i])
				for _, a := range alts {
					out = append(out, expandBraces(p[:open]+a+p[i+1:])...)
				}
				return out
			}
		}
	}
	return []string{p}
}

// split cuts a comment-free line at every '{' and '}' outside quotes
// (read_line's "line residue") and tokenizes the pieces.
func (r *reader) split(pos Pos, text string) {
	for text != "" {
		i := braceIndex(text)
		switch {
		case i < 0:
			r.add(pos, text)
			return
		case i == 0:
			r.lines = append(r.lines, line{pos: pos, words: []string{text[:1]}})
			text = strings.TrimLeft(text[1:], " \t")
		default:
			r.add(pos, strings.TrimRight(text[:i], " \t"))
			text = text[i:]
		}
	}
}

func braceIndex(s string) int {
	quote := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quote = !quote
		case '{', '}':
			if !quote {
				return i
			}
		}
	}
	return -1
}

// add tokenizes one logical line (alloc_strvec_r).
func (r *reader) add(pos Pos, text string) {
	var words []string
	s := text
	for {
		s = strings.TrimLeft(s, " \t\f\v\r\n")
		if s == "" {
			break
		}
		if s[0] == '"' {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				r.report(pos, FixedUp, "Unmatched quote: '%s'", text)
				break
			}
			words = append(words, s[1:1+end])
			s = s[end+2:]
			continue
		}
		end := strings.IndexAny(s, " \t\f\v\r\n\"")
		if end < 0 {
			end = len(s)
		}
		words = append(words, s[:end])
		s = s[end:]
	}
	if len(words) > 0 {
		r.lines = append(r.lines, line{pos: pos, words: words})
	}
}

func isBrace(l line, b string) bool { return len(l.words) == 1 && l.words[0] == b }

// tree groups the logical lines into statements and blocks.
func (r *reader) tree() []*node {
	i := 0
	top := r.level(&i, 0)
	if r.unclosed > 0 {
		r.report(Pos{}, FixedUp, "There are %d missing '}'s or extra '{'s", r.unclosed)
	}
	return top
}

func (r *reader) level(i *int, depth int) []*node {
	nodes, _ := r.levelEnd(i, depth)
	return nodes
}

func (r *reader) levelEnd(i *int, depth int) ([]*node, Pos) {
	var out []*node
	var last *node // the statement on the previous logical line
	for *i < len(r.lines) {
		l := r.lines[*i]
		*i++
		switch {
		case isBrace(l, "}"):
			if depth > 0 {
				return out, l.pos
			}
			r.report(l.pos, FixedUp, "Extra '}' found")
			last = nil
		case isBrace(l, "{"):
			if last != nil {
				last.hasBlock = true
				last.block, last.end = r.levelEnd(i, depth+1)
				last = nil
				continue
			}
			// keepalived ignores the '{' and reads what follows at the
			// current level; the contents are kept at this level too.
			r.report(l.pos, FixedUp, "Unexpected '{' - ignoring")
			out = append(out, r.level(i, depth+1)...)
			last = nil
		default:
			last = &node{pos: l.pos, words: l.words}
			out = append(out, last)
		}
	}
	if depth > r.unclosed {
		r.unclosed = depth
	}
	var end Pos
	if n := len(r.lines); n > 0 {
		end = r.lines[n-1].pos
	}
	return out, end
}
