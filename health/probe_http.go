package health

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct{ Min, Max int }

// URL is one url block of HTTP_GET/SSL_GET.
type URL struct {
	Path string
	// Status lists the accepted status codes; empty means 200-299 (keepalived's default, also
	// when a digest is set: both must pass).
	Status []StatusRange
	// Digest is the MD5 of the body in hex, as genhash prints it; empty means not checked.
	Digest      string
	VirtualHost string // url-level virtualhost
}

// HTTPProbe is HTTP_GET (or SSL_GET with TLS). It speaks HTTP like keepalived: one request per
// connection ("GET path HTTP/1.0", "User-Agent: KeepAliveClient", Host), reads to the end of the
// stream, takes the status from the status line and hashes the raw body (up to Content-Length)
// with MD5, so a digest matches genhash's. TLS certificates are not verified (keepalived does
// not verify them unless a CA is configured).
type HTTPProbe struct {
	Conn ConnOpts
	TLS  bool
	URLs []URL
	// VirtualHost is the checker's Host header when a url has none; the caller resolves
	// keepalived's inheritance (checker, then real server, then virtual server).
	VirtualHost string
	// Protocol is http_protocol: "1.0" (default), "1.0C" or "1.1" (the last two add
	// "Connection: close").
	Protocol string
	// EnableSNI sends SNI: SNIName, else the url's virtualhost, else VirtualHost.
	EnableSNI bool
	SNIName   string
}

// Kind is HTTP_GET or SSL_GET.
func (p *HTTPProbe) Kind() Kind {
	if p.TLS {
		return KindSSL
	}
	return KindHTTP
}

// Steps is the number of urls.
func (p *HTTPProbe) Steps() int { return max(len(p.URLs), 1) }

func herr(msg string, err error) Result { return Result{Err: &ProbeError{Msg: msg, Err: err}} }

// Check fetches url number step.
func (p *HTTPProbe) Check(ctx context.Context, step int) Result {
	if step < 0 || step >= len(p.URLs) {
		return herr("no such url", nil)
	}
	u := p.URLs[step]
	to := p.Conn.timeout()
	raw, err := p.Conn.dial(ctx, "tcp")
	if err != nil {
		if isTimeout(err) {
			return herr("Timeout connecting", err)
		}
		return herr("Error connecting", err)
	}
	defer raw.Close()
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var conn net.Conn = raw
	if p.TLS {
		cfg := &tls.Config{InsecureSkipVerify: true} // as keepalived: no verification
		if p.EnableSNI {
			switch {
			case p.SNIName != "":
				cfg.ServerName = p.SNIName
			case u.VirtualHost != "":
				cfg.ServerName = u.VirtualHost
			default:
				cfg.ServerName = p.VirtualHost
			}
		}
		tc := tls.Client(raw, cfg)
		raw.SetDeadline(time.Now().Add(to))
		if err := tc.Handshake(); err != nil {
			return herr("SSL handshake/communication error connecting to", err)
		}
		conn = tc
	}
	raw.SetDeadline(time.Now().Add(to))
	if _, err := io.WriteString(conn, p.request(u)); err != nil {
		return herr("Cannot send get request to", err)
	}

	var head []byte
	var body []byte // only before the header is complete
	header := false
	clen := -1
	got := 0
	h := md5.New()
	buf := make([]byte, 4096)
	var readErr error
	for {
		raw.SetReadDeadline(time.Now().Add(to))
		n, err := conn.Read(buf)
		if n > 0 {
			data := buf[:n]
			if !header {
				head = append(head, data...)
				if i := bytes.Index(head, []byte("\r\n\r\n")); i >= 0 {
					header = true
					body = head[i+4:]
					head = head[:i+4]
					clen = contentLength(head)
					data = body
				} else if len(head) > 1<<20 {
					return herr("HTTP header too long from", nil)
				} else {
					data = nil
				}
			}
			if header && len(data) > 0 {
				take := len(data)
				if clen >= 0 {
					take = min(take, max(clen-got, 0))
				}
				h.Write(data[:take])
				got += len(data)
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !(p.TLS && errors.Is(err, io.ErrUnexpectedEOF)) {
				readErr = err
			}
			break
		}
	}
	if readErr != nil {
		if isTimeout(readErr) {
			return herr("Timeout HTTP read", readErr)
		}
		return herr("Read error with", readErr)
	}
	if !header {
		return herr("Read, no data received from", nil)
	}
	code := statusCode(head)
	if !statusOK(code, u.Status) {
		return herr("HTTP status code error to", fmt.Errorf("status %d", code))
	}
	if u.Digest != "" {
		if sum := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(sum, u.Digest) {
			return herr("MD5 digest error to", fmt.Errorf("digest %s", sum))
		}
	}
	return Result{}
}

// request builds keepalived's GET request.
func (p *HTTPProbe) request(u URL) string {
	host := u.VirtualHost
	if host == "" {
		host = p.VirtualHost
	}
	if host == "" {
		a := p.Conn.Dst.Addr()
		if a.Is6() && !a.Is4In6() {
			host = "[" + a.String() + "]"
		} else {
			host = a.String()
		}
		host += ":" + strconv.Itoa(int(p.Conn.Dst.Port()))
	}
	minor, conn := 0, ""
	switch p.Protocol {
	case "1.1":
		minor, conn = 1, "Connection: close\r\n"
	case "1.0C", "1.0c":
		conn = "Connection: close\r\n"
	}
	return fmt.Sprintf("GET %s HTTP/1.%d\r\nUser-Agent: KeepAliveClient\r\n%sHost: %s\r\n\r\n", u.Path, minor, conn, host)
}

// statusCode reads the status as keepalived's extract_status_code: after the first space,
// exactly three digits followed by a space; anything else is 0.
func statusCode(b []byte) int {
	i := bytes.IndexAny(b, " \r")
	if i < 0 || b[i] != ' ' {
		return 0
	}
	b = b[i+1:]
	if len(b) < 4 || b[3] != ' ' {
		return 0
	}
	n, err := strconv.Atoi(string(b[:3]))
	if err != nil {
		return 0
	}
	return n
}

// contentLength is keepalived's extract_content_length: "Content-Length:" (case as written),
// a decimal, then the end of the line; -1 when absent or malformed.
func contentLength(head []byte) int {
	i := bytes.Index(head, []byte("Content-Length:"))
	if i < 0 {
		return -1
	}
	s := bytes.TrimLeft(head[i+len("Content-Length:"):], " \t")
	j := 0
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		j++
	}
	if j == 0 || j >= len(s) || (s[j] != '\r' && s[j] != '\n') {
		return -1
	}
	n, err := strconv.Atoi(string(s[:j]))
	if err != nil {
		return -1
	}
	return n
}

func statusOK(code int, ranges []StatusRange) bool {
	if len(ranges) == 0 {
		return code >= 200 && code <= 299
	}
	for _, r := range ranges {
		if code >= r.Min && code <= r.Max {
			return true
		}
	}
	return false
}

// Genhash returns the MD5 hex digest the HTTPProbe compares for url number step, as
// keepalived's genhash prints it (for gvsadm or tests).
func Genhash(ctx context.Context, p *HTTPProbe, step int) (string, error) {
	q := *p
	u := q.URLs[step]
	u.Digest = "00000000000000000000000000000000"
	u.Status = []StatusRange{{100, 599}}
	q.URLs = []URL{u}
	res := q.Check(ctx, 0)
	var pe *ProbeError
	if errors.As(res.Err, &pe) && pe.Msg == "MD5 digest error to" {
		return strings.TrimPrefix(pe.Err.Error(), "digest "), nil
	}
	if res.Err == nil {
		return u.Digest, nil
	}
	return "", res.Err
}
