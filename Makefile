# The two commands of the README:
#   make quick   install, then run presets/quick.yaml -> results/quick/leaderboard.md
#   make test    install, then run the test suite
# A killed `make quick` / `make run` resumes by running the same command again: the runner clears
# the lock a dead Snakemake left (never a live run's) and Snakemake redoes the unfinished jobs.
# Your run writes results/<preset>/ (ignored by git); `make publish PRESET=name` copies a finished,
# checked run to results/published/<preset>/ (committed), and refuses otherwise.
PYTHON ?= python3
VENV   ?= .venv
CORES  ?= all
PRESET ?= quick
EXTRAS ?= test,lint,cluster

SNAKEMAKE = $(VENV)/bin/snakemake
RUN       = $(VENV)/bin/python -m benchmark.runner --profile workflows/profiles/local

.PHONY: install quick run run-gpu dry-run test test-fast lint clean-work publish
.DELETE_ON_ERROR:

install: $(VENV)/.installed

# reinstalls when the dependencies change
$(VENV)/.installed: pyproject.toml scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) EXTRAS=$(EXTRAS) bash scripts/install.sh
	touch $@

quick: install
	$(RUN) --cores $(CORES) --configfile presets/quick.yaml
	@echo "leaderboard: results/quick/leaderboard.md (its 'Published AA' column compares it with results/published/quick)"

# any preset: make run PRESET=tiny
run: install
	$(RUN) --cores $(CORES) --configfile presets/$(PRESET).yaml

# every GPU of a workstation busy, one job per card: make run-gpu PRESET=paper_cifar10
run-gpu: install
	$(VENV)/bin/python -m benchmark.runner --profile workflows/profiles/local-gpu --gpus auto \
		--cores $(CORES) --configfile presets/$(PRESET).yaml

dry-run: install
	$(SNAKEMAKE) -n --profile workflows/profiles/local --configfile presets/$(PRESET).yaml

test: install
	$(VENV)/bin/python -m pytest -q --durations=15

# everything but the end-to-end runs and the tests that take seconds (markers e2e, slow): a minute
test-fast: install
	$(VENV)/bin/python -m pytest -q -m "not e2e and not slow"

# One linter per line; CI runs them before the tests.
lint: install
# the workflow: snakefmt --check, then snakemake --lint
	$(VENV)/bin/python scripts/lint_workflow.py
# the Python code: pyflakes, pycodestyle, import order, bugbear, pyupgrade ([tool.ruff])
	$(VENV)/bin/ruff check .

# results/<preset> -> results/published/<preset> after the integrity checks (a clean tree at the
# committed revision, every result valid and made by the current code, the leaderboard
# re-aggregating identically, every model file the one its result evaluated); trains nothing,
# refuses with the reasons otherwise. Then commit results/published.
publish: install
	$(VENV)/bin/python -m benchmark publish --preset $(PRESET)

# checkpoints and logs of one preset (results/ stay)
clean-work:
	rm -rf work/$(PRESET)
