# make demo / make test do all their own set-up: .venv with dmf installed, Cassandra jars,
# openssh-server, and the local test bed (Cassandra + sshd + S3 on loopback).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed-stamp
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: install demo test unit testbed-up testbed-status testbed-down bench clean deployments

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

demo: install
	$(VENV)/bin/dmf-testbed up --nodes 3
	$(VENV)/bin/python -m dmf.testbed.demo

test: install
	$(VENV)/bin/python -m pytest

unit: install
	$(VENV)/bin/python -m pytest tests/unit

testbed-up: install
	$(VENV)/bin/dmf-testbed up --nodes 3

testbed-status: install
	$(VENV)/bin/python -m dmf.testbed.demo

testbed-down: install
	$(VENV)/bin/dmf-testbed down

# Every benchmark, on the three-node test bed (started if needed); each prints its table.
bench: install
	$(VENV)/bin/dmf-testbed up --nodes 3
	$(VENV)/bin/python bench/backup.py --sizes 256,1024
	$(VENV)/bin/python bench/restore.py
	$(VENV)/bin/python bench/commitlog_rpo.py
	$(VENV)/bin/python bench/list.py --sets 500,1000,2000
	$(VENV)/bin/python bench/fixed_costs.py

clean: testbed-down
	rm -rf .testbed

# Registers dmf's deployments on the Prefect API of the active profile (PREFECT_API_URL).
deployments: install
	$(VENV)/bin/prefect work-pool create dmf --type process --overwrite
	$(VENV)/bin/prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml
