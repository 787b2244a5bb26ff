# Every target sets up what it needs, in .venv: `make demo` only the package and OpenSSH (sshd, ssh-keygen);
# `make test` also the development extras and the Debian packages the tests use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := $(shell command -v apt-get 2>/dev/null)

.PHONY: demo test lint bench openssh test-deps vm-host vm-deps vm-test drill clean

demo: $(VENV)/.ready-base openssh
	$(PY) -m healthcheck demo

# Two tiers: the fast one first (pure functions, fake hosts), stopping at its first failure; then the
# integration tier (real sshd, moto, Pulumi's mocks, the scripts, ruff and mypy) in 3 processes: its tests mostly
# wait on sockets and subprocesses, so 3 on 2 cores took 7 minutes where one took 17.
test: $(VENV)/.ready-dev test-deps
	$(PY) -m pytest -m "not vm and not integration" -x
	$(PY) -m pytest -m "not vm and integration" -n 3

lint: $(VENV)/.ready-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The drill's VM needs Linux (ideally with KVM; it runs under emulation without) and Debian's qemu,
# debootstrap and genisoimage. The image is cached in ~/.cache/trainguard/vm/ (TRAINGUARD_VM_CACHE).
# On a Mac, drill a deployed instance instead: trainguard drill i-...
VM_PACKAGES := qemu-system-x86 qemu-utils debootstrap genisoimage

vm-host:
	@[ "$$(uname -s)" = Linux ] || { echo "the VM drill runs on Linux (ideally with KVM); here, drill a deployed instance: trainguard drill i-..."; exit 1; }
	@command -v qemu-system-x86_64 >/dev/null || [ -n "$(APT)" ] || { echo "the VM drill needs qemu-system-x86_64, debootstrap and genisoimage; install them, or drill a deployed instance: trainguard drill i-..."; exit 1; }

vm-deps: vm-host
	@missing=""; \
	for package in $(VM_PACKAGES); do dpkg -s $$package >/dev/null 2>&1 || missing="$$missing $$package"; done; \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The scenarios in a VM, with their timelines and table; `make vm-test` runs them shortened as tests.
drill: $(VENV)/.ready-dev openssh vm-deps
	$(SUDO) $(PY) -m drill

vm-test: $(VENV)/.ready-dev test-deps vm-deps
	$(PY) -m pytest -m vm tests/vm

bench: $(VENV)/.ready-dev test-deps
	$(PY) benchmarks/probe_fleet.py
	$(PY) benchmarks/single_probe.py
	$(PY) benchmarks/pull.py
	$(PY) benchmarks/worker_library.py

# The demo's throwaway sshd: Debian's openssh-server, or the system's own (macOS ships /usr/sbin/sshd).
openssh:
	@if [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null; then \
		if [ -z "$(APT)" ]; then echo "the demo needs OpenSSH's /usr/sbin/sshd and ssh-keygen: install them"; exit 1; fi; \
		echo "Installing Debian packages: openssh-server openssh-client"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends openssh-server openssh-client; \
	fi

# What the tests use beyond the demo: ip (network namespaces), shellcheck, libfuse2 (a case-insensitive folder,
# as on a Mac), and, in CI only, cloud-init for `cloud-init schema` (disabled at boot: on a workstation it would
# try to configure the machine).
test-deps: openssh
	@missing=""; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v shellcheck >/dev/null || missing="$$missing shellcheck"; \
	{ /sbin/ldconfig -p 2>/dev/null | grep -q 'libfuse\.so\.2 '; } || missing="$$missing libfuse2 fuse3"; \
	if [ -n "$$missing" ]; then \
		if [ -z "$(APT)" ]; then echo "the tests need:$$missing (Debian package names); install them"; exit 1; fi; \
		echo "Installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@if [ -n "$$CI$$TRAINGUARD_INSTALL_CLOUD_INIT" ] && ! command -v cloud-init >/dev/null; then \
		echo "Installing Debian's cloud-init (for cloud-init schema; disabled at boot)"; \
		$(SUDO) mkdir -p /etc/cloud && $(SUDO) touch /etc/cloud/cloud-init.disabled && \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends cloud-init; \
	fi

# The package alone (what `pipx install .` gives a laptop), then the extras for the tests and `pulumi up`.
$(VENV)/.ready-base: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "trainguard needs Python 3.10 or newer; $(PYTHON) is $$($(PYTHON) --version)"; exit 1; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		[ -n "$(APT)" ] || { echo "$(PYTHON) cannot make a virtual environment (python -m venv)"; exit 1; }; \
		echo "Installing Debian's python3-venv"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv && \
		rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	@touch $@

$(VENV)/.ready-dev: $(VENV)/.ready-base
	$(PY) -m pip install -q -e '.[infra,dev]'
	@touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
