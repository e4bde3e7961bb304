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
RACE_PKGS ?= ./conntrack/... ./scheduler/... ./ipvs/... ./ipvsadm/... ./forwarder/... ./control/ ./daemon/ ./metrics/

APT_PKGS  := iproute2 socat curl nginx-light nftables ethtool procps prometheus
# The commands those packages provide, checked before anything is installed
# (promtool, from prometheus, checks gvsd's /metrics in package metrics' tests).
APT_CMDS  := ip socat curl nginx nft ethtool sysctl promtool

# apt_install(what, commands, packages): install the Debian packages when any of the commands is missing.
define apt_install
	@missing=""; for c in $(2); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing $(1) (missing:$$missing)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $(3) >/dev/null; \
	fi
endef

.PHONY: all build test unit race deps demo golden fuzz bench bench-go bench-deps clean vet check-root

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
deps:
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
FUZZTIME ?= 60s
fuzz:
	@for p in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list 'Fuzz.*' $$p | grep ^Fuzz); do \
			echo "== $$p $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$p || exit 1; \
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

# bench: gvs side by side with nftables DNAT, HAProxy and a no-op ring forwarder on the lab (root;
# about 25 minutes; BENCH_FLAGS=-quick for about 5). Results in out/bench/, the fair view (exact
# CPU per packet and per connection, rate at an equal CPU budget) first (see docs/PERFORMANCE.md).
# Run it on a quiet machine: the exact CPU figures charge everything the machine does.
BENCH_FLAGS ?=
bench: check-root bench-deps build
	$(BIN)/gvs-bench -bin $(BIN) -out out/bench $(BENCH_FLAGS)

check-root:
	@if [ "$$(id -u)" != 0 ]; then echo "this target needs root (network namespaces)"; exit 1; fi

# demo: the main job on a fresh machine. MODE=nat|dr|tun, SCHED=rr|wrr|wlc|sh|mh|...
demo: check-root deps build
	$(BIN)/gvs-demo -mode $(MODE) -sched $(SCHED) -bin $(BIN)

clean:
	rm -rf $(BIN)
