# Two commands: `make demo` (the main job) and `make test`; `make replicate` runs the paper's orderings (45-50
# min). All create .venv and install the project on first use; the stamp makes a second run skip the install in seconds.
PYTHON ?= python3
VENV := .venv
# pytest-xdist workers for `make test` (each test's subprocesses use one thread), a test file per worker at a
# time (its module fixtures, a trained model or a converted release, are built once); PYTEST_ARGS adds options
# (.ci/run: --max-skips).
TEST_WORKERS ?= 2
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: install test demo replicate twin bench clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	VENV=$(VENV) PYTHON=$(PYTHON) bash scripts/install.sh
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS) tests

demo: $(STAMP)
	bash recipes/demo.sh

replicate: $(STAMP)
	$(VENV)/bin/python -m fairseq_xlm.cli.replicate run

# the tiny twin of one of the paper's experiments (configs/), e.g. make twin EXP=umt_enfr
twin: $(STAMP)
	bash recipes/twin.sh $(EXP)

bench: $(STAMP)
	$(VENV)/bin/python bench/pretrain_throughput.py

clean:
	rm -rf $(VENV) data-bin/demo
