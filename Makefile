# Two commands set up everything on a fresh machine:
#   make demo   - create .venv (if missing), install, run the main job
#   make test   - create .venv (if missing), install, run the test suite
VENV    ?= .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
FONTS   := fonts-arphic-ukai fonts-arphic-uming fonts-cwtex-heib fonts-cwtex-ming fonts-cwtex-yen \
           fonts-wqy-zenhei fonts-wqy-microhei fonts-ipafont-gothic fonts-ipafont-mincho fonts-vlgothic \
           fonts-seto fonts-aoyagi-soseki fonts-kouzan-mouhitsu fonts-motoya-l-cedar fonts-smiley-sans \
           fonts-hanazono fonts-unifont fonts-yusei-magic
GLYPHS  := tune_lsd/data/bundled/glyphs32.npz

.PHONY: demo test test-fast lint bench install fonts glyphs glyphs-check clean-runs browser docs

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[test]' 2>&1 | grep -v "is ignored: it is neither" || true
	$(PYTHON) -c "import tune_lsd.engine, ray.tune, optuna, mlflow"  # fail here, not later, if the install is broken
	@touch $(STAMP)

install: $(STAMP)

# The main job: a real search (Optuna TPE + ASHA, 8 trials, 2 at a time) on the bundled glyphs,
# then `finalize` (the best config retrained on all training classes, tested once, registered
# as the champion, compared with the untrained network and raw pixels) and the HTML report.
DEMO    := demo-$(shell date +%Y%m%d-%H%M%S)
# The search compares trials at 5 epochs; the final model trains 8 (measured over
# 3 demo seeds: benchmarks/RESULTS.md, "The demo").
FINAL_EPOCHS := 8
TUNE    := $(VENV)/bin/tune-lsd
demo: $(STAMP)
	$(TUNE) search --space lsd --name $(DEMO) --num-samples 8 --max-concurrent 2
	$(TUNE) report $(DEMO)
	@echo
	@echo "Browse every trial, its curves and checkpoint in MLflow:  $(TUNE) ui   -> http://127.0.0.1:5000"
	@echo "Neighbours of your own images:  $(TUNE) retrieve --model models:/$(DEMO)-best@champion --gallery DIR -o retrieval/"
	@echo
	$(TUNE) finalize $(DEMO) --set schedule.epochs=$(FINAL_EPOCHS)

test: $(STAMP)
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
	  $(MAKE) --no-print-directory browser >/tmp/tune-lsd-chromium.log 2>&1 || \
	  echo "chromium not installed (see /tmp/tune-lsd-chromium.log): the browser tests will skip"
	$(PYTHON) -m pytest -q -n 2 --dist loadgroup

# The fast lane: every test but the end-to-end ones marked `slow` (searches, servers, clusters).
test-fast: $(STAMP)
	$(PYTHON) -m pytest -q -n 2 --dist loadgroup -m "not slow"

# The gates CI runs before the tests: lint, format and types (configured in pyproject.toml).
# `ruff format .` and `ruff check --fix .` repair most of what the first two report.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Speed benchmarks 1-3 (search overhead, LSD step cost, evaluation): ~5 minutes on 2 cores.
bench: $(STAMP)
	$(PYTHON) benchmarks/search_overhead.py
	$(PYTHON) benchmarks/lsd_step_cost.py
	$(PYTHON) benchmarks/evaluation.py

# Debian's CJK fonts, for rendering bigger glyph sets (not needed by tests or the demo).
fonts:
	apt-get install -y --no-install-recommends $(FONTS) || (apt-get update && apt-get install -y --no-install-recommends $(FONTS))

# Re-render the bundled glyph sample (bit-for-bit identical with the same fonts and Pillow).
glyphs: $(STAMP)
	$(PYTHON) -m tune_lsd.data.glyphs $(GLYPHS) 500 32

glyphs-check: $(STAMP)
	$(PYTHON) -m tune_lsd.data.glyphs /tmp/glyphs-check-$$$$.npz 500 32 >/dev/null && \
	  cmp $(GLYPHS) /tmp/glyphs-check-$$$$.npz && echo "bundled glyphs reproduce bit-for-bit"

clean-runs:
	rm -rf runs

# Debian's chromium, for the browser tests of the MLflow UI and the search report.
browser:
	command -v chromium >/dev/null || apt-get install -y --no-install-recommends chromium || \
	  (apt-get update && apt-get install -y --no-install-recommends chromium)

# Regenerate the config reference from the schema (tests/test_config_reference.py checks it).
docs: $(STAMP)
	$(PYTHON) -m tune_lsd.config_reference > docs/config.md
