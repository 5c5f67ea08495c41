# EmbedLab: `make run` opens the app, `make test` runs the whole suite (as CI does), `make test-fast` the unit tier.
# Both create ./.venv on first use and reinstall only when requirements.txt changes.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp-requirements
HOST   ?= 127.0.0.1   # localhost only; `make run HOST=0.0.0.0` serves a workshop LAN
PORT   ?= 8501
PYTEST_ARGS ?=
WORKSHOP ?=            # `make run WORKSHOP=1`: workshop mode (names, owners, fair queue, instructor passcode)
WORKSHOP_ENV := $(if $(filter 1 true yes,$(strip $(WORKSHOP))),EMBEDLAB_WORKSHOP=1)

.PHONY: run test test-fast install system-deps bench clean

run: $(STAMP)
	$(if $(WORKSHOP_ENV),$(WORKSHOP_ENV) $(PY) -m core.workshop --new-code --host $(strip $(HOST)) --port $(PORT))
	$(WORKSHOP_ENV) $(PY) -m streamlit run app.py --server.address $(strip $(HOST)) --server.port $(PORT)

# The browser tests (-m e2e) in a second pytest process beside the rest (tests/run_suite.py): they mostly
# wait on their server and Chromium, so the two halves overlap on 2 cores. SPLIT=0: one pytest process.
SPLIT ?= 1
test: $(STAMP) system-deps
	$(if $(filter 0,$(strip $(SPLIT))),$(PY) -m pytest,$(PY) tests/run_suite.py) $(PYTEST_ARGS)

# The unit tier: no browser (e2e), no pages through AppTest (app), nothing marked slow; the tiers are
# marked in tests/conftest.py and registered in pytest.ini. Under 2 minutes on 2 idle cores (README).
FAST_MARKERS ?= not slow and not e2e and not app
test-fast: $(STAMP)
	$(PY) -m pytest -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# Chromium for the browser tests and Debian's Fashion-MNIST for the offline default: installed
# when apt-get is available and we are root; otherwise the tests that need them skip with a reason.
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  need=""; command -v chromium >/dev/null || need="$$need chromium"; \
	  [ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need="$$need dataset-fashion-mnist"; \
	  if [ -n "$$need" ]; then echo "installing:$$need"; \
	    (apt-get install -y -qq $$need >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq $$need >/dev/null)) \
	    || echo "warning: could not install$$need; tests that need them will skip"; fi; \
	fi

bench: $(STAMP)
	$(PY) -m core bench --quick

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
