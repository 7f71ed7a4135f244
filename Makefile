# Ferry's Makefile: a thin facade over scripts/. `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV := .venv

.PHONY: help setup run test lint typecheck unit fmt clean bench-smb smbtorture bench-multichannel bench-selector

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## install the venv, packages, nats-server (and Debian packages when root)
	@scripts/setup.sh

run: setup ## start the local stack (nats-server + services) for this host; Ctrl-C stops it
	@$(VENV)/bin/ferry stack run

test: setup ## lint, type checks and every test
	@scripts/test.sh

lint: setup ## ruff (lint and format check)
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

typecheck: setup ## mypy (strict on libs/)
	@$(VENV)/bin/mypy

unit: setup ## the unit tests only (no root, no peers)
	@$(VENV)/bin/pytest tests/unit

fmt: setup ## format the code
	@$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

bench-smb: setup ## SMB data path: Ferry's server vs Samba's smbd (same client, 1 GiB get/put, signed then encrypted)
	@$(VENV)/bin/python scripts/bench_smb.py

bench-selector: setup ## selector at scale: 1,000 hosts x 8 NICs in KV, plan latency p50/p99 (NATS, HTTP) and memory
	@$(VENV)/bin/python scripts/bench_selector.py

bench-multichannel: setup ## Multichannel over 1, 2 and 4 shaped links between two namespaced hosts (root): Ferry's client vs smbclient
	@$(VENV)/bin/python scripts/bench_multichannel.py

smbtorture: setup ## Samba's smbtorture suites against Ferry's SMB server: the README's pass/fail/skip table
	@$(VENV)/bin/python scripts/smbtorture_report.py

clean: ## remove the venv, tools and local state
	rm -rf .venv .tools .ferry .pytest_cache .mypy_cache .ruff_cache
