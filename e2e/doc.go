// Package e2e is gvs's end-to-end test suite. It has no non-test code: the
// tests build gvsd, gvsadm (also installed as ipvsadm), gvs-testsrv and
// gvs-decap once, then every test builds its own network-namespace lab
// (internal/lab), starts gvsd in the director namespace, configures it only
// through the `ipvsadm` command, as an operator's script would, and drives
// real traffic with curl, socat and Go clients from the client namespaces.
//
// The tests need root, network namespaces, and the Debian tools `make deps`
// installs (curl, socat). Without them they skip, except under CI=true,
// where a missing capability or tool is a failure.
//
// Run them with
//
//	go test ./e2e/ -v
package e2e
