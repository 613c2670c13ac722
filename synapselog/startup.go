package synapselog

import (
	"bufio"
	"io"
	"slices"
	"strings"
)

// StartupFailure says why Synapse's last start failed, from the end of its newest log file
// (file and container sources): the exception it logged after "Exception during startup"
// (e.g. "IncorrectDatabaseSetup: Postgres sequence 'events_stream_seq' is inconsistent with
// associated stream position of 'events' in the 'stream_positions' table."). "" when the last
// start did not fail there, or no log says.
func StartupFailure(sources []Source) string {
	for _, src := range slices.Backward(sources) {
		if src.Type != "file" && src.Type != "container" {
			continue
		}
		files, err := logFiles(src.Path)
		if err != nil {
			continue
		}
		files = slices.DeleteFunc(files, func(p string) bool { return strings.HasSuffix(p, ".gz") })
		if len(files) == 0 {
			continue
		}
		f, err := openLog(files[len(files)-1])
		if err != nil {
			continue
		}
		if fi, err := f.Stat(); err == nil && fi.Size() > TailBytes {
			_, _ = f.Seek(fi.Size()-TailBytes, io.SeekStart)
		}
		why := startupFailure(f)
		f.Close()
		if why != "" {
			return why
		}
	}
	return ""
}

// startupFailure reads a log's lines and returns the exception of the last start, if it failed.
func startupFailure(r io.Reader) string {
	var lines []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := unwrap(sc.Bytes())
		if strings.Contains(line, "***** STARTING SERVER *****") {
			lines = lines[:0]
			continue
		}
		lines = append(lines, line)
	}
	at := -1
	for i, l := range lines {
		if strings.Contains(l, " - Exception during startup") {
			at = i
		}
	}
	if at < 0 {
		return ""
	}
	// The traceback's last unindented line names the exception; its message may go on over
	// the following lines, up to a blank one.
	var msg []string
	for _, l := range lines[at+1:] {
		switch {
		case msg != nil && strings.TrimSpace(l) == "":
			return strings.Join(msg, " ")
		case msg != nil:
			msg = append(msg, strings.TrimSpace(l))
		case l == "" || l[0] == ' ' || l[0] == '\t' || strings.HasPrefix(l, "Traceback ") || !findTime(l).IsZero():
		default:
			name, rest, ok := strings.Cut(l, ": ")
			if !ok {
				name, rest = strings.TrimSuffix(strings.TrimSpace(l), ":"), ""
			}
			if i := strings.LastIndexByte(name, '.'); i >= 0 {
				name = name[i+1:]
			}
			msg = []string{name + ":"}
			if rest = strings.TrimSpace(rest); rest != "" {
				msg = append(msg, rest)
			}
		}
	}
	return strings.Join(msg, " ")
}
