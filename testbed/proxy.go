package testbed

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proxy is nginx in front of a homeserver's federation listener, terminating TLS with its
// certificate (incident 3). A normalising server has `proxy_pass` with a URI part: nginx
// decodes the request URI and sends its own, so %21 arrives as ! and signatures fail. A
// verbatim one has none: the request URI goes through unchanged. nginx runs as a daemon, so
// the demo's proxy outlives the script that started it; everything lives in Dir.
type Proxy struct {
	Dir string
}

// conf is the proxy's nginx.conf.
func (p *Proxy) conf() string { return filepath.Join(p.Dir, "nginx.conf") }

// Conf is the path of the proxy's nginx.conf (what an admin would edit to fix it).
func (p *Proxy) Conf() string { return p.conf() }

// StartProxy starts nginx with a normalising server on port normalising and, unless 0, a
// verbatim one on port verbatim, in front of h's federation port. Stop it with Stop (tests:
// t.Cleanup).
func StartProxy(t T, h *Homeserver, dir string, normalising, verbatim int) *Proxy {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	p := OpenProxy(dir)
	_, port, _ := strings.Cut(h.Name, ":")
	server := func(listen int, pass string) string {
		if listen == 0 {
			return ""
		}
		return fmt.Sprintf(`
  server {
    listen 127.0.0.1:%d ssl;
    ssl_certificate %s;
    ssl_certificate_key %s;
    location / { proxy_pass %s; proxy_set_header Host $host:$server_port; proxy_ssl_verify off; }
  }`, listen, filepath.Join(h.Dir, "tls.crt"), filepath.Join(h.Dir, "tls.key"), pass)
	}
	conf := fmt.Sprintf(`user root;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
  access_log %[1]s/access.log;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
%[2]s
%[3]s
}
`, p.Dir, server(normalising, "https://127.0.0.1:"+port+"/"), server(verbatim, "https://127.0.0.1:"+port))
	if err := os.WriteFile(p.conf(), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	p.start(t)
	return p
}

// OpenProxy is the proxy whose files are in dir (started by an earlier process).
func OpenProxy(dir string) *Proxy {
	// nginx reads a relative -c path relative to its prefix (-p), and nginx.conf names files
	// by absolute paths, so keep the directory absolute.
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return &Proxy{Dir: dir}
}

var (
	normalisingPass = regexp.MustCompile(`(proxy_pass https://[^;/]+)/;`)
	listenPort      = regexp.MustCompile(`listen 127\.0\.0\.1:(\d+) ssl;`)
)

// Fix is the admin's fix: `proxy_pass` without a URI part, so nginx passes the request URI
// unchanged; nginx is restarted with it.
func (p *Proxy) Fix(t T) {
	t.Helper()
	raw, err := os.ReadFile(p.conf())
	if err != nil {
		t.Fatal(err)
	}
	fixed := normalisingPass.ReplaceAll(raw, []byte("$1;"))
	if err = os.WriteFile(p.conf(), fixed, 0o600); err != nil {
		t.Fatal(err)
	}
	if err = p.Stop(); err != nil {
		t.Fatal(err)
	}
	p.start(t)
}

// Ports are the ports the proxy listens on, from its nginx.conf.
func (p *Proxy) Ports() []int {
	raw, _ := os.ReadFile(p.conf())
	var ports []int
	for _, m := range listenPort.FindAllSubmatch(raw, -1) {
		n, _ := strconv.Atoi(string(m[1]))
		ports = append(ports, n)
	}
	return ports
}

// Address is host:port of the proxy's first server.
func (p *Proxy) Address() string {
	if ports := p.Ports(); len(ports) > 0 {
		return fmt.Sprintf("127.0.0.1:%d", ports[0])
	}
	return ""
}

func nginxBinary(t T) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err == nil {
		return bin
	}
	if out, err := exec.Command("bash", "-c", "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx").CombinedOutput(); err != nil {
		t.Fatalf("nginx is not installed and apt-get failed: %v\n%s", err, out)
	}
	if bin, err = exec.LookPath("nginx"); err != nil {
		t.Fatal(err)
	}
	return bin
}

func (p *Proxy) start(t T) {
	t.Helper()
	// The daemon keeps what it inherits open: give it a file, not a pipe to wait on.
	outPath := filepath.Join(p.Dir, "nginx.out")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(nginxBinary(t), "-c", p.conf(), "-p", p.Dir)
	cmd.Stdout, cmd.Stderr = out, out
	if err = cmd.Run(); err != nil {
		msg, _ := os.ReadFile(outPath)
		log, _ := os.ReadFile(filepath.Join(p.Dir, "error.log"))
		t.Fatalf("nginx: %v\n%s\nerror.log:\n%s", err, msg, log)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		up := true
		for _, port := range p.Ports() {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
			if err != nil {
				up = false
				break
			}
			_ = c.Close()
		}
		if up {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(p.Dir, "error.log"))
			t.Fatalf("nginx did not listen on %v:\n%s", p.Ports(), log)
		}
	}
}

// Stop stops nginx (its master and workers) and waits until it is gone; a proxy not
// running is no error.
func (p *Proxy) Stop() error {
	raw, err := os.ReadFile(filepath.Join(p.Dir, "nginx.pid"))
	if err != nil {
		return nil
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return fmt.Errorf("nginx pid file: %w", err)
	}
	if err = syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return nil // gone already
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if syscall.Kill(pid, 0) != nil {
			return nil
		}
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	return nil
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on right now.
func FreePort(t T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
