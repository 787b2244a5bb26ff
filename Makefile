# Every target sets up what it needs: Debian packages (openssh-server for the
# throwaway sshd), the .venv, and the project installed into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
READY := $(VENV)/.ready
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint bench system-deps vm-deps vm-test drill clean

demo: $(READY) system-deps
	$(PY) -m healthcheck demo

# Two tiers: the fast one first (pure functions, fake hosts), stopping at its first failure; then the
# integration tier (real sshd, moto, Pulumi's mocks, the scripts, ruff and mypy).
test: $(READY) system-deps
	$(PY) -m pytest -m "not vm and not integration" -x
	$(PY) -m pytest -m "not vm and integration"

lint: $(READY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The drill's VM: Debian's qemu, debootstrap and genisoimage. The image is
# cached in ~/.cache/trainguard/vm/ (TRAINGUARD_VM_CACHE), keyed by its recipe.
VM_PACKAGES := qemu-system-x86 qemu-utils debootstrap genisoimage

vm-deps:
	@missing=""; \
	for package in $(VM_PACKAGES); do dpkg -s $$package >/dev/null 2>&1 || missing="$$missing $$package"; done; \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The three scenarios in a VM (unguarded, guarded, recovery), with their timelines and table;
# `make vm-test` runs them shortened as pytest tests.
drill: $(READY) system-deps vm-deps
	$(SUDO) $(PY) -m drill

vm-test: $(READY) system-deps vm-deps
	$(PY) -m pytest -m vm tests/vm

bench: $(READY) system-deps
	$(PY) benchmarks/probe_fleet.py
	$(PY) benchmarks/single_probe.py
	$(PY) benchmarks/pull.py

system-deps:
	@missing=""; \
	[ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	command -v ssh-keygen >/dev/null || missing="$$missing openssh-client"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v shellcheck >/dev/null || missing="$$missing shellcheck"; \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# cloud-init validates the user data. Installed only in CI (or when asked), and
	@# disabled at boot, since on a workstation it would try to configure the machine.
	@if [ -n "$$CI$$TRAINGUARD_INSTALL_CLOUD_INIT" ] && ! command -v cloud-init >/dev/null; then \
		echo "Installing Debian's cloud-init (for cloud-init schema; disabled at boot)"; \
		$(SUDO) mkdir -p /etc/cloud && $(SUDO) touch /etc/cloud/cloud-init.disabled && \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends cloud-init; \
	fi

$(READY): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "trainguard needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) --version)"; exit 1; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		echo "Installing Debian's python3-venv"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv && \
		rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[infra,test,lint]'
	@touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
