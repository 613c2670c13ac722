// Command stage stages on the testbed the incidents medic heals, with the same code the
// tests use (package testbed), for `make demo` (scripts/demo.sh):
//
//	stage demo <dir>        the three incidents on hs1; nginx's files in <dir>/nginx, medic's
//	                        config (bot @medic) in <dir>/config.yaml. Prints CONFIG=,
//	                        FORGOTTEN_ROOM=, POISONED_ROOM= and PROXY= (host:port) lines.
//	stage fix-proxy <dir>   the admin's fix of the proxy: proxy_pass without a URI part in
//	                        <dir>/nginx/nginx.conf, nginx restarted
//	stage stop-proxy <dir>  stop the proxy
//
// The testbed is the one the MEDIC_TESTBED_* variables describe (testbed.sh up prints them).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/synapse-medic/medic/testbed"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: stage demo|fix-proxy|stop-proxy <dir>")
		os.Exit(2)
	}
	dir := os.Args[2]
	var err error
	switch os.Args[1] {
	case "demo":
		err = testbed.RunStaging(os.Stderr, func(t *testbed.Staging) {
			tb := testbed.Get(t)
			d := testbed.StageDemo(t, tb, filepath.Join(dir, "nginx"))
			// The demo turns medic's monitoring listener on (/healthz, /ready, /metrics).
			cfg := d.Config(t, tb, dir, tb.HS1.UserID("medic"), tb.MedicPassword, "", "metrics: {listen: \"127.0.0.1:9330\"}\n")
			fmt.Printf("CONFIG=%s\nFORGOTTEN_ROOM=%s\nPOISONED_ROOM=%s\nPROXY=%s\n", cfg, d.Forgotten.Room, d.Poisoned.Room, d.Proxy.Address())
		})
	case "fix-proxy":
		err = testbed.RunStaging(os.Stderr, func(t *testbed.Staging) { testbed.OpenProxy(filepath.Join(dir, "nginx")).Fix(t) })
	case "stop-proxy":
		err = testbed.OpenProxy(filepath.Join(dir, "nginx")).Stop()
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "stage:", err)
		os.Exit(1)
	}
}
