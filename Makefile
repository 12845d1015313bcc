# The two commands of the README:
#   make quick   install, then run presets/quick.yaml -> results/quick/leaderboard.md
#   make test    install, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
CORES  ?= all
PRESET ?= quick
EXTRAS ?= test,cluster

SNAKEMAKE = $(VENV)/bin/snakemake

.PHONY: install quick run dry-run test clean-work
.DELETE_ON_ERROR:

install: $(VENV)/.installed

# reinstalls when the dependencies change
$(VENV)/.installed: pyproject.toml scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) EXTRAS=$(EXTRAS) bash scripts/install.sh
	touch $@

quick: install
	$(SNAKEMAKE) --profile workflows/profiles/local --cores $(CORES) --configfile presets/quick.yaml
	@echo "leaderboard: results/quick/leaderboard.md"

# any preset: make run PRESET=tiny
run: install
	$(SNAKEMAKE) --profile workflows/profiles/local --cores $(CORES) --configfile presets/$(PRESET).yaml

dry-run: install
	$(SNAKEMAKE) -n --profile workflows/profiles/local --configfile presets/$(PRESET).yaml

test: install
	$(VENV)/bin/python -m pytest -q

# checkpoints and logs of one preset (results/ stay)
clean-work:
	rm -rf work/$(PRESET)
