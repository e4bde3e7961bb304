# gvs — Linux Virtual Server as a userspace Go dataplane.
#
#   make demo   build, create a lab of network namespaces, balance real traffic, tear down (root)
#   make test   everything CI runs: unit, golden-pcap replay, fuzz seeds, netns end-to-end (root)
#
# Tools the tests and the demo need are installed here when missing (Debian packages), so a fresh
# machine needs nothing but these two commands.

GO        ?= go
BIN       := bin
GOFLAGS   ?=
export GOFLAGS
TEST_PKGS ?= ./...
# Packages whose tests are also run under the race detector.
RACE_PKGS ?= ./conntrack/... ./scheduler/... ./ipvs/... ./ipvsadm/... ./forwarder/... ./control/ ./daemon/ ./metrics/ ./lvssync/ ./health/

APT_PKGS  := iproute2 socat curl nginx-light nftables ethtool procps prometheus tshark keepalived
# The commands those packages provide, checked before anything is installed
# (promtool, from prometheus, checks gvsd's /metrics in package metrics' tests;
# tshark decodes the sync daemon's messages in package lvssync's tests;
# keepalived runs VRRP for the two-director tests, e2e TestHAFailover).
APT_CMDS  := ip socat curl nginx nft ethtool sysctl promtool tshark keepalived

# apt_install(what, commands, packages): install the Debian packages when any of the commands is missing.
define apt_install
	@missing=""; for c in $(2); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing $(1) (missing:$$missing)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $(3) >/dev/null; \
	fi
endef

.PHONY: all build test unit race deps demo demo-ha golden fuzz bench bench-go bench-deps soak hostile clean vet check-root install

MODE  ?= nat
SCHED ?= rr

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l . | tee /dev/stderr)" || (echo "gofmt: files above need formatting" && exit 1)

# deps installs the Debian packages the end-to-end tests and the demo use, only when a command is missing.
# tshark (lvssync's dissector test): answer wireshark-common's setuid question
# beforehand so that the install never waits for it.
deps:
	@command -v tshark >/dev/null 2>&1 || echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections 2>/dev/null || true
	$(call apt_install,test tools,$(APT_CMDS),$(APT_PKGS))

unit:
	$(GO) test -count=1 -timeout 15m $(TEST_PKGS)

race:
	$(GO) test -count=1 -race -timeout 10m $(RACE_PKGS)

test: deps vet unit race

# golden regenerates the replay inputs and the golden outputs under testdata/replay.
golden:
	$(GO) run ./cmd/gvs-pcapgen -out testdata/replay
	$(GO) test ./forwarder/ -run TestGolden -update

# fuzz runs each fuzz target for FUZZTIME (a campaign; not part of make test, which runs the seeds).
# FUZZTIME_<Target> overrides it for one target, FUZZ selects targets by regexp and FUZZPKGS packages, e.g.
#   make fuzz FUZZTIME=10m FUZZTIME_FuzzParseWrk=1m FUZZ='FuzzProcess|FuzzTableInvariants|FuzzRewrite|FuzzEngine'
# A failing input is written to the package's testdata/fuzz/<Target>/ and stops the campaign.
FUZZTIME ?= 60s
FUZZ ?= .
FUZZPKGS ?= ./...
fuzz:
	@for p in $$($(GO) list $(FUZZPKGS)); do \
		for f in $$($(GO) test -list 'Fuzz.*' $$p | grep ^Fuzz | grep -E -- '$(FUZZ)'); do \
			t=$$(printenv FUZZTIME_$$f || echo $(FUZZTIME)); \
			echo "== $$p $$f $$t"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $$t $$p || exit 1; \
		done; \
	done

# bench-go runs the Go micro-benchmarks of the data-path packages.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./checksum/ ./rewrite/ ./conntrack/ ./scheduler/ ./forwarder/

# bench-deps installs the load tools and contenders of make bench (trafgen from netsniff-ng, wrk,
# HAProxy, nginx-light, nftables, conntrack), only when a command is missing.
BENCH_APT_PKGS := netsniff-ng wrk haproxy nginx-light nftables conntrack iproute2 util-linux
BENCH_APT_CMDS := trafgen wrk haproxy nginx nft conntrack ip taskset
bench-deps:
	$(call apt_install,benchmark tools,$(BENCH_APT_CMDS),$(BENCH_APT_PKGS))

# bench: gvs (TPACKET, AF_XDP, the XDP fast path) side by side with nftables DNAT, HAProxy and a no-op ring forwarder on the lab (root;
# about 33 minutes; BENCH_FLAGS=-quick for about 6). Results in out/bench/, the fair view (exact
# CPU per packet and per connection, rate at an equal CPU budget) first (see docs/PERFORMANCE.md).
# Run it on a quiet machine: the exact CPU figures charge everything the machine does.
BENCH_FLAGS ?=
bench: check-root bench-deps build
	$(BIN)/gvs-bench -bin $(BIN) -out out/bench $(BENCH_FLAGS)

# soak: gvsd in the lab for SOAK_DURATION (60s..10m, default 5m) under a full-rate SYN flood from
# spoofed sources, SIGHUP reloads every 3 s, a real server killed and restarted, the DIP link
# flapped and a gvsd SIGKILL + restart, with 10 long-lived NAT and 10 DR connections doing a
# request every 20 ms (root; not part of make test). Exits non-zero when a bound breaks; the
# report, rss.csv and gvsd's logs are in out/soak/. SOAK_FLAGS e.g. -conn-capacity 262144.
SOAK_DURATION ?= 5m
SOAK_FLAGS ?=
soak: check-root build
	$(BIN)/gvs-soak -bin $(BIN) -out out/soak -duration $(SOAK_DURATION) $(SOAK_FLAGS)

# hostile: the attacks and faults too long for make test (about 3 minutes, root): floods of SYNs
# (random and single source), ACKs, RSTs, UDP, ICMP and never-completed fragments from a raw
# AF_PACKET sender, and SIGHUP storms, gvsadm -C + reload, SIGSTOP/SIGCONT, a real server's MAC
# change, route and address removal, interface renames and MTU changes under an established
# connection, and the established traffic's share delivered under full-rate ACK, RST, UDP and ICMP
# floods from a TX ring (logged) (daemon/*_e2e_linux_test.go, build tag hostile).
hostile: check-root
	$(GO) test -count=1 -tags hostile -run 'TestHostileFloods|TestFaultSequences|TestEstablishedUnderFloods' -v -timeout 10m ./daemon/

check-root:
	@if [ "$$(id -u)" != 0 ]; then echo "this target needs root (network namespaces)"; exit 1; fi

# demo: the main job on a fresh machine. MODE=nat|dr|tun, SCHED=rr|wrr|wlc|sh|mh|...
demo: check-root deps build
	$(BIN)/gvs-demo -mode $(MODE) -sched $(SCHED) -bin $(BIN)

# demo-ha plays the two-director scene (README "Two directors, one VIP"):
# keepalived + gvs sync daemons, 50 connections, the master killed or its
# links cut, the connections going on through the backup. MODE=nat or dr.
demo-ha: check-root deps
	$(GO) test -count=1 -v -run 'TestHAFailover/$(MODE)/' ./e2e/

# install: gvsd and gvsadm to $(DESTDIR)$(SBINDIR), the systemd unit to $(DESTDIR)$(UNITDIR), the
# sysusers.d entry of its user gvs, and (only if absent) /etc/default/gvsd and /etc/gvs/rules.
# INSTALL_IPVSADM_LINK=1 also links ipvsadm, ipvsadm-save and ipvsadm-restore to gvsadm.
# Then, as root: systemd-sysusers (or useradd --system gvs), edit /etc/default/gvsd,
# systemctl daemon-reload, systemctl enable --now gvsd.
PREFIX      ?= /usr/local
SBINDIR     ?= $(PREFIX)/sbin
SYSCONFDIR  ?= /etc
UNITDIR     ?= /lib/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
INSTALL     ?= install
INSTALL_IPVSADM_LINK ?=
install: build
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
		$(DESTDIR)$(SYSCONFDIR)/default $(DESTDIR)$(SYSCONFDIR)/gvs
	$(INSTALL) -m 0755 $(BIN)/gvsd $(BIN)/gvsadm $(DESTDIR)$(SBINDIR)/
	sed 's|@SBINDIR@|$(SBINDIR)|g; s|/etc/default/gvsd|$(SYSCONFDIR)/default/gvsd|g' dist/gvsd.service > $(DESTDIR)$(UNITDIR)/gvsd.service.tmp
	chmod 0644 $(DESTDIR)$(UNITDIR)/gvsd.service.tmp && mv $(DESTDIR)$(UNITDIR)/gvsd.service.tmp $(DESTDIR)$(UNITDIR)/gvsd.service
	$(INSTALL) -m 0644 dist/gvs.sysusers $(DESTDIR)$(SYSUSERSDIR)/gvs.conf
	@test -e $(DESTDIR)$(SYSCONFDIR)/default/gvsd || \
		sed 's|/etc/gvs/rules|$(SYSCONFDIR)/gvs/rules|g' dist/gvsd.default > $(DESTDIR)$(SYSCONFDIR)/default/gvsd
	@test -e $(DESTDIR)$(SYSCONFDIR)/gvs/rules || $(INSTALL) -m 0644 dist/rules $(DESTDIR)$(SYSCONFDIR)/gvs/rules
	@if [ -n "$(INSTALL_IPVSADM_LINK)" ]; then \
		for n in ipvsadm ipvsadm-save ipvsadm-restore; do \
			ln -sf gvsadm $(DESTDIR)$(SBINDIR)/$$n && echo "linked $(DESTDIR)$(SBINDIR)/$$n -> gvsadm"; \
		done; \
	fi

clean:
	rm -rf $(BIN)
