package control

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"

	"gvs/conntrack"
	"gvs/ipvs"

	"gvs/internal/oracle"
)

// fuzzRules is the state the engine fuzz targets start from.
const fuzzRules = "-A -t 198.51.100.10:80 -s rr\n" +
	"-a -t 198.51.100.10:80 -r 198.18.2.11:8080 -m -w 1\n" +
	"-a -t 198.51.100.10:80 -r 198.18.2.12:8080 -m -w 2\n" +
	"-A -u 198.51.100.10:53 -s wlc -p 60\n" +
	"-a -u 198.51.100.10:53 -r 198.18.2.11:53 -g\n" +
	"-A -f 7 -s sh\n"

// Credentials the engine fuzz targets run as.
var (
	fuzzUser  = Cred{UID: 1000, GID: 1000, PID: 42}
	fuzzAdmin = Cred{UID: 1001, GID: 50, PID: 43} // member of AdminGID
)

// newFuzzEngine is an engine over the fuzzRules, a few connections, and
// bound sysctl settings; AdminGID is 50.
func newFuzzEngine(t testing.TB) *testEngine {
	t.Helper()
	te := newTestEngine(t)
	te.AdminGID = 50
	te.Settings = ipvs.NewSettings()
	BindSettings(te.Settings, te.Conns, te.Table)
	if _, errOut, code := te.run(root, fuzzRules, "-R"); code != 0 {
		t.Fatalf("rules: %d %s", code, errOut)
	}
	te.Table.Read(func(svcs []*ipvs.Service) {
		for i, svc := range svcs {
			for j, d := range svc.Dests() {
				k := conntrack.NewInKey(svc.Config.Proto, netip.AddrPortFrom(netip.MustParseAddr("198.18.1.11"), uint16(1000+10*i+j)),
					netip.AddrPortFrom(svc.Config.Addr, svc.Config.Port))
				var c conntrack.Conn
				if err := te.Conns.Create(k, d, d.Port, conntrack.TemplateRef{}, conntrack.TCPSyn, te.clock, &c); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
	return te
}

// snapshot is everything a command could change, as root sees it: the
// rules, the counters, the timeouts, the connections and the sysctls.
func (te *testEngine) snapshot(t testing.TB) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"prog=ipvsadm-save", "-n"},
		{"-Ln", "--stats", "--exact"},
		{"-Ln", "--rate", "--exact"},
		{"-Ln", "--timeout"},
		{"-Lnc"},
		{"-Ln", "--persistent-conn"},
		{"--sysctl"},
	} {
		out, errOut, code := te.run(root, "", args...)
		if code != 0 {
			t.Fatalf("%v: %d %s", args, code, errOut)
		}
		b.WriteString(out)
	}
	return b.String()
}

// fuzzArgv splits a fuzzed command line at spaces; the first word is the
// program name ("" is ipvsadm).
func fuzzArgv(line []byte) []string {
	argv := strings.Split(string(line), " ")
	if argv[0] == "" {
		argv[0] = "ipvsadm"
	}
	return argv
}

// FuzzEngine runs a fuzzed command line and stdin through Engine.Run as
// root, as an AdminGID member and as an unprivileged user. Oracles: it
// never panics; a failing command (non-zero status) prints a message on
// stderr, ending in a newline, without Go formatting debris, and changes
// nothing (ipvsadm's and the kernel's validation, and -R's all-or-nothing
// batch); an unprivileged caller never changes anything, whatever the
// status; -h, -v and reading a sysctl are the only things it may do
// successfully.
func FuzzEngine(f *testing.F) {
	for _, s := range []struct {
		line, stdin string
		who         uint8
	}{
		{"ipvsadm -Ln", "", 0},
		{"ipvsadm -A -t 198.51.100.10:81 -s wrr", "", 0},
		{"ipvsadm -A -t 198.51.100.10:80 -s rr", "", 0}, // exists
		{"ipvsadm -a -t 198.51.100.10:80 -r 198.18.2.13 -m -x 5 -y 2", "", 0},
		{"ipvsadm -e -t 198.51.100.10:80 -r 198.18.2.11:8080 -w 0", "", 1},
		{"ipvsadm -d -t 198.51.100.10:80 -r 198.18.2.11:8080", "", 2},
		{"ipvsadm -D -u 198.51.100.10:53", "", 2},
		{"ipvsadm -C", "", 2},
		{"ipvsadm -Z", "", 2},
		{"ipvsadm --set 1 2 3", "", 0},
		{"ipvsadm --set 1 2 3", "", 2},
		{"ipvsadm -R", "-A -t 198.51.100.10:82 -s rr\n-a -t 198.51.100.10:82 -r 198.18.2.11 -g\n", 0},
		{"ipvsadm -R", "-A -t 198.51.100.10:82 -s rr\n-a -t 198.51.100.10:99 -r 198.18.2.11 -g\n", 0}, // fails half way
		{"ipvsadm-restore", "-A -t 198.51.100.10:83 -s nosuch\n", 0},
		{"ipvsadm-restore", "-A -f 9 -s rr\n", 2},
		{"ipvsadm-save -n", "", 2},
		{"ipvsadm --sysctl secure_tcp=3", "", 0},
		{"ipvsadm --sysctl secure_tcp=3", "", 2},
		{"ipvsadm --sysctl conn_reuse_mode", "", 2},
		{"ipvsadm --sysctl nosuch=1", "", 0},
		{"ipvsadm --sysctl expire_nodest_conn=x", "", 1},
		{"ipvsadm -E -f 7 -s rr -p 30 -M 255.255.255.0", "", 0},
		{"ipvsadm -h", "", 2},
		{"ipvsadm -v", "", 2},
		{"ipvsadm -A -t 198.51.100.10:80 -s rr -x", "", 0},
		{"ipvsadm -L -n -c --sort", "", 0},
		{" --timeout", "", 0},
	} {
		f.Add([]byte(s.line), []byte(s.stdin), s.who)
	}
	f.Fuzz(func(t *testing.T, line, stdin []byte, who uint8) {
		if len(line) > 512 || len(stdin) > 4096 {
			return
		}
		te := newFuzzEngine(t)
		changes := 0
		te.OnChange = func() error { changes++; return nil }
		cred := []Cred{root, fuzzAdmin, fuzzUser}[who%3]
		before := te.snapshot(t)
		argv := fuzzArgv(line)
		var o, e bytes.Buffer
		code := te.Run(argv, bytes.NewReader(stdin), cred, &o, &e)
		after := te.snapshot(t)
		checkEngineRun(t, argv, cred, code, o.String(), e.String(), before, after, changes)
	})
}

func checkEngineRun(t testing.TB, argv []string, cred Cred, code int, stdout, stderr, before, after string, changes int) {
	t.Helper()
	if strings.Contains(stdout+stderr, "%!") {
		t.Fatalf("%q: formatting debris in the output: %q %q", argv, stdout, stderr)
	}
	if code != 0 {
		if stderr == "" || !strings.HasSuffix(stderr, "\n") {
			t.Fatalf("%q: exit %d with stderr %q", argv, code, stderr)
		}
		if before != after || changes != 0 {
			t.Fatalf("%q (uid %d): exit %d (%q) but the state changed (%d OnChange):\n%s\n--\n%s", argv, cred.UID, code, stderr,
				changes, before, after)
		}
	}
	if cred == fuzzUser {
		if before != after || changes != 0 {
			t.Fatalf("%q: an unprivileged caller changed the state (exit %d):\n%s\n--\n%s", argv, code, before, after)
		}
		if code == 0 {
			switch _, sysctl := sysctlArgs(argv); {
			case sysctl:
			default:
				if c, local := Local(argv, io.Discard, io.Discard); !local || c != 0 {
					t.Fatalf("%q: an unprivileged caller succeeded: %q", argv, stdout)
				}
			}
		}
	}
}

// FuzzFrames feeds a fuzzed byte stream to the control socket's frame
// reader, as the server and the client read it, with a fuzzed size
// limit. Oracles: no panic; a frame read is at most the limit, and
// writing it again gives exactly the bytes consumed; the only errors are
// io.EOF at a frame boundary, io.ErrUnexpectedEOF inside one and
// ErrTooLarge (with nothing of the payload consumed); a frame that decodes
// as a Request re-encodes to the same payload.
func FuzzFrames(f *testing.F) {
	req, _ := (&Request{Argv: []string{"ipvsadm", "-Ln"}}).MarshalBinary()
	var two bytes.Buffer
	_ = writeFrame(&two, req)
	_ = writeFrame(&two, []byte{1, 2, 3})
	f.Add(two.Bytes(), uint16(64))
	f.Add([]byte{0, 0, 0, 9, 1, 2}, uint16(64))          // truncated
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1}, uint16(64)) // too large
	f.Add([]byte{0, 0, 0}, uint16(0))                    // short header
	f.Add([]byte{0, 0, 0, 0}, uint16(0))                 // empty frame
	f.Fuzz(func(t *testing.T, stream []byte, max uint16) {
		r := bytes.NewReader(stream)
		for {
			off := len(stream) - r.Len()
			payload, err := readFrame(r, int(max))
			consumed := stream[off : len(stream)-r.Len()]
			switch {
			case err == nil:
				if len(payload) > int(max) {
					t.Fatalf("frame of %d bytes over the limit %d", len(payload), max)
				}
				var w bytes.Buffer
				if err := writeFrame(&w, payload); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(w.Bytes(), consumed) {
					t.Fatalf("frame re-written as %x, read from %x", w.Bytes(), consumed)
				}
				var req Request
				if req.UnmarshalBinary(payload) == nil {
					b, err := req.MarshalBinary()
					if err != nil || !bytes.Equal(b, payload) {
						t.Fatalf("request %q re-encoded as %x (%v), was %x", req.Argv, b, err, payload)
					}
				}
				continue
			case errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF):
				if len(consumed) != 0 {
					t.Fatalf("EOF after %d bytes of a frame", len(consumed))
				}
			case errors.Is(err, io.ErrUnexpectedEOF):
				if r.Len() != 0 {
					t.Fatalf("unexpected EOF with %d bytes left", r.Len())
				}
			case errors.Is(err, ErrTooLarge):
				if len(consumed) != 4 {
					t.Fatalf("too large after consuming %d bytes", len(consumed))
				}
			default:
				t.Fatalf("error %v", err)
			}
			return
		}
	})
}

// TestFuzzEngineOraclesFail: FuzzEngine's oracle rejects each kind of
// wrong outcome, and accepts the right ones.
func TestFuzzEngineOraclesFail(t *testing.T) {
	rec := &oracle.Recorder{T: t}
	ln := []string{"ipvsadm", "-Ln"}
	add := []string{"ipvsadm", "-A", "-t", "198.51.100.10:81"}
	tests := []struct {
		name           string
		argv           []string
		cred           Cred
		code           int
		stderr, before string
		after          string
		changes        int
		want           string
	}{
		{"failure without a message", add, root, 255, "", "s", "s", 0, "with stderr"},
		{"message without newline", add, root, 255, "Service already exists", "s", "s", 0, "with stderr"},
		{"failure that changed the rules", add, root, 255, "x\n", "s", "t", 0, "state changed"},
		{"failure that called OnChange", add, root, 255, "x\n", "s", "s", 1, "state changed"},
		{"unprivileged change", add, fuzzUser, 0, "", "s", "t", 0, "unprivileged caller changed"},
		{"unprivileged success", ln, fuzzUser, 0, "", "s", "s", 0, "unprivileged caller succeeded"},
		{"format debris", ln, root, 0, "%!d(string=x)\n", "s", "s", 0, "debris"},
		{"ok: root change", add, root, 0, "", "s", "t", 1, ""},
		{"ok: unprivileged refused", add, fuzzUser, 2, msgPerm + "\n", "s", "s", 0, ""},
		{"ok: unprivileged help", []string{"ipvsadm", "-h"}, fuzzUser, 0, "", "s", "s", 0, ""},
		{"ok: unprivileged sysctl read", []string{"ipvsadm", "--sysctl", "secure_tcp"}, fuzzUser, 0, "", "s", "s", 0, ""},
	}
	for _, tt := range tests {
		msg := rec.Catch(func() {
			checkEngineRun(rec, tt.argv, tt.cred, tt.code, "", tt.stderr, tt.before, tt.after, tt.changes)
		})
		if tt.want == "" && msg != "" || !strings.Contains(msg, tt.want) {
			t.Errorf("%s: oracle said %q, want %q", tt.name, msg, tt.want)
		}
	}
}
