# Two commands matter on a fresh machine (Python 3, pip and make only):
#   make demo   - creates .venv, installs s3kit with the cli extra, runs the demo on local servers
#   make test   - creates .venv with the test extras, runs lint, types and the whole suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export AWS_EC2_METADATA_DISABLED := true

.PHONY: demo test test-obstore test-faults test-scale test-matrix ceph ceph-install lint unit integration bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || { $(PY) -m pip install --quiet virtualenv && $(PY) -m virtualenv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.cli: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[cli]'
	touch $@

$(VENV)/.test: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.cli

demo: $(VENV)/.cli
	$(BIN)/s3kit demo

# Lint (ruff, mypy: CPU-bound) runs beside the suite (mostly waiting on its servers), its output
# printed after the tests; either failing fails make test.
test: $(VENV)/.test
	@$(MAKE) --no-print-directory lint > .lint.log 2>&1 & lint=$$!; \
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not faults and not scale" --ignore=tests/matrix; \
	tests=$$?; wait $$lint; linted=$$?; cat .lint.log; rm -f .lint.log; \
	test $$tests -eq 0 && test $$linted -eq 0

# make test's integration-level tests again with obstore as the default transport (issue 9:
# the whole integration suite, the guide's code and the quick faults on both transports).
# Tests that name their transport run as in make test; a few marked boto3_only are skipped. Not
# repeated: the contract suite (already runs both transports) and the harness's own tests.
# The quick fault matrix runs in a process of its own. On obstore a healthy nanio endpoint's
# breaker sometimes opens during the SlowDown storm (the faster client loads the Python servers
# until answers take over the matrix's 1 s read timeout): seen after the whole integration suite
# in one process and under heavy load, never in 3 quiet runs in a fresh process (issue 9's note).
test-obstore: $(VENV)/.test
	S3KIT_TRANSPORT=obstore $(BIN)/python -m pytest -q -p no:cacheprovider \
	  -m "not faults and not scale" tests/integration tests/compat \
	  --ignore=tests/integration/test_transport_contract.py \
	  --ignore=tests/integration/test_harness.py
	S3KIT_TRANSPORT=obstore $(BIN)/python -m pytest -q -p no:cacheprovider \
	  -m "not faults and not scale" tests/faults

# The compatibility matrix: every feature on moto, nanio, SeaweedFS and Ceph RGW, both transports
# (make test runs the transport contract suite on moto and nanio).
test-matrix: $(VENV)/.test ceph-install
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/matrix

# Debian's Ceph packages, when this machine can install them (root + apt); else the Ceph cells
# are skipped with a reason.
ceph-install:
	@if command -v radosgw >/dev/null && command -v ceph-mon >/dev/null && command -v ceph-osd >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends radosgw ceph-mon ceph-osd ceph-common >/dev/null; } \
	    || echo "ceph-install: apt-get failed; the Ceph RGW cells will be skipped"; \
	else echo "ceph-install: no root apt-get here; the Ceph RGW cells will be skipped"; fi

ceph: ceph-install
	bash scripts/ceph-up.sh

# Scale-out: the Redis fleet, Dask bulk sync (a LocalCluster of worker processes, 1,000 objects),
# bulk replicate/repair on worker processes, and the bench's smoke run.
test-scale: $(VENV)/.test
	$(BIN)/python -m pytest -q -p no:cacheprovider -m scale

# The full fault matrix (the quick subset runs in make test), and the longer fault tests of the
# integration suite (a stalled or killed endpoint, a replica down during writes, deletes and
# repair, a killed process's ledger, hedging against a slow replica, background probes, an
# fsspec read across a kill) on both transports; they keep make test under 10 minutes.
test-faults: $(VENV)/.test
	$(BIN)/python -m pytest -q -p no:cacheprovider -m faults tests/faults tests/integration
	S3KIT_TRANSPORT=obstore $(BIN)/python -m pytest -q -p no:cacheprovider -m faults tests/integration

lint: $(VENV)/.test
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

unit: $(VENV)/.test
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

integration: $(VENV)/.test
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/integration tests/compat

bench: $(VENV)/.test
	$(BIN)/s3kit bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
