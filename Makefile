# botfleet: two commands do everything on a fresh machine: `make run`, `make test`.
CARGO ?= cargo
MUSL_TARGET := x86_64-unknown-linux-musl
MUSL_BIN := target/$(MUSL_TARGET)/release/botfleet
ARM_TARGET := aarch64-unknown-linux-musl
ARM_BIN := target/$(ARM_TARGET)/release/botfleet
# Static musl builds are linked non-PIE: see .cargo/config.toml.
# apt-get waits for another apt (a shared host) instead of failing at once.
APT_INSTALL = if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq

.PHONY: run demo test build lint fmt bench bench-quick musl musl-aarch64 chaos clean help

help:
	@echo "make run    run the fleet from .env (no .env: a demo against the built-in sandbox)"
	@echo "make test   every test (unit and integration, against the sandbox on loopback)"
	@echo "make build  the release binary: target/release/botfleet"
	@echo "make musl   a static binary: $(MUSL_BIN)"
	@echo "make musl-aarch64  a static ARM64 binary (Raspberry Pi 3/4/5, ARM VPS): $(ARM_BIN)"
	@echo "make lint   cargo fmt --check and clippy with warnings as errors"
	@echo "make chaos  the long chaos, supervisor-kill and soak runs (figures for RELIABILITY.md)"
	@echo "make bench  measure botfleet beside PTB, aiogram, grammY, teloxide, and 1,000/3,000-bot fleets; writes BENCHMARKS.md (~25 min)"
	@echo "make bench-quick  a 1-run smoke check of the benchmark (~8 min)"

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

# The aarch64 build first (~1.5 min from clean, then cached), so that
# tests/aarch64.rs runs it under qemu; where it cannot be built (no rustup
# target, no cross gcc), those tests print SKIPPED and the rest still runs.
test:
	@$(MAKE) --no-print-directory musl-aarch64 || echo "WARNING: make musl-aarch64 failed: tests/aarch64.rs will print SKIPPED"
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
	@command -v musl-gcc >/dev/null 2>&1 || { $(APT_INSTALL) musl-tools; }
	CC_x86_64_unknown_linux_musl=musl-gcc $(CARGO) build --release --target $(MUSL_TARGET)
	@file $(MUSL_BIN) | grep -Eq "statically linked|static-pie linked" || { echo "$(MUSL_BIN) is not static"; exit 1; }
	@! ldd $(MUSL_BIN) 2>&1 | grep -q "=>" || { echo "ldd finds libraries in $(MUSL_BIN)"; exit 1; }
	@echo "$(MUSL_BIN): static, $$(stat -c %s $(MUSL_BIN)) bytes"

# The static ARM64 build, cross-compiled on an x86_64 host: Rust's target,
# and Debian's aarch64 gcc as the C compiler for ring (rustls' crypto) and as
# the linker driver (rustc brings musl's crt and libc itself: self-contained).
# Run it on a Pi as it is; here, tests/aarch64.rs runs it under qemu-user.
musl-aarch64:
	@rustup target list --installed | grep -qx $(ARM_TARGET) || rustup target add $(ARM_TARGET)
	@command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || { $(APT_INSTALL) gcc-aarch64-linux-gnu; }
	CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar \
		$(CARGO) build --release --target $(ARM_TARGET)
	@file $(ARM_BIN) | grep -q "ARM aarch64" || { echo "$(ARM_BIN) is not an aarch64 binary"; exit 1; }
	@file $(ARM_BIN) | grep -Eq "statically linked|static-pie linked" || { echo "$(ARM_BIN) is not static"; exit 1; }
	@echo "$(ARM_BIN): static aarch64, $$(stat -c %s $(ARM_BIN)) bytes"

# The long chaos form: 10,000 updates under kills and faults, 10 supervisor
# kills, a 10-minute soak (BOTFLEET_SOAK_SECS=N to change it). Prints the
# FIGURES lines that RELIABILITY.md quotes.
chaos:
	BOTFLEET_CHAOS_LONG=1 $(CARGO) test --test chaos -- --nocapture --test-threads=1

# Builds release, musl and musl-aarch64 itself, installs the other libraries
# into target/bench-peers, then measures (bench/bench.py).
bench:
	python3 bench/bench.py

bench-quick:
	python3 bench/bench.py --quick

clean:
	$(CARGO) clean
