# botfleet: two commands do everything on a fresh machine: `make run`, `make test`.
CARGO ?= cargo
MUSL_TARGET := x86_64-unknown-linux-musl
MUSL_BIN := target/$(MUSL_TARGET)/release/botfleet

.PHONY: run demo test build lint fmt bench bench-quick musl chaos clean help

help:
	@echo "make run    run the fleet from .env (no .env: a demo against the built-in sandbox)"
	@echo "make test   every test (unit and integration, against the sandbox on loopback)"
	@echo "make build  the release binary: target/release/botfleet"
	@echo "make musl   a static binary: $(MUSL_BIN)"
	@echo "make lint   cargo fmt --check and clippy with warnings as errors"
	@echo "make chaos  the long chaos, supervisor-kill and soak runs (figures for RELIABILITY.md)"
	@echo "make bench  measure the fleet and write BENCHMARKS.md (~15 min)"
	@echo "make bench-quick  a 1-run smoke check of the benchmark (~4 min)"

# Not --quiet: the first build takes a minute, and cargo's progress shows it.
run:
	@if [ -f .env ]; then \
		$(CARGO) run --release -- run; \
	else \
		echo "No .env here: starting the demo fleet against the built-in sandbox."; \
		$(CARGO) run --release -- demo; \
	fi

demo:
	$(CARGO) run --release -- demo

test:
	$(CARGO) test --all-targets

build:
	$(CARGO) build --release

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

# The static build installs what it needs: the Rust target and musl-gcc
# (for ring's C code).
musl:
	@rustup target list --installed | grep -qx $(MUSL_TARGET) || rustup target add $(MUSL_TARGET)
	@command -v musl-gcc >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq musl-tools; }
	CC_x86_64_unknown_linux_musl=musl-gcc $(CARGO) build --release --target $(MUSL_TARGET)
	@file $(MUSL_BIN) | grep -Eq "statically linked|static-pie linked" || { echo "$(MUSL_BIN) is not static"; exit 1; }
	@! ldd $(MUSL_BIN) 2>&1 | grep -q "=>" || { echo "ldd finds libraries in $(MUSL_BIN)"; exit 1; }
	@echo "$(MUSL_BIN): static, $$(stat -c %s $(MUSL_BIN)) bytes"

# The long chaos form: 10,000 updates under kills and faults, 10 supervisor
# kills, a 10-minute soak (BOTFLEET_SOAK_SECS=N to change it). Prints the
# FIGURES lines that RELIABILITY.md quotes.
chaos:
	BOTFLEET_CHAOS_LONG=1 $(CARGO) test --test chaos -- --nocapture --test-threads=1

# Builds release and musl itself, then measures (bench/bench.py, stdlib only).
bench:
	python3 bench/bench.py

bench-quick:
	python3 bench/bench.py --quick

clean:
	$(CARGO) clean
