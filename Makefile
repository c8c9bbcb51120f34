# `make test` and `make up` work on a fresh machine with Python 3.11: both build .venv first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
MODEL_DIR ?= models
MODEL_NAME ?= mnist
TRAIN_ARGS ?=
GRPC_PORT ?= 8500
REST_PORT ?= 8501
DASHBOARD_PORT ?= 8080
# The server and dashboard listen on this machine only; HOST=0.0.0.0 opens them (as in .env for Compose).
HOST ?= 127.0.0.1

.PHONY: install test test-fast lint format protos up train drill handwriting-data bench-train bench-serve bench-replicas bench-uploads bench-profile bench-peers

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade 'pip>=25.1'
	# setuptools' banner about editable installs is advice for package authors, not for whoever runs this.
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: $(INSTALLED)
	$(PY) -m pytest

# The in-process tier: one module's logic at a time, no trained model, no server process (under 30 s).
test-fast: $(INSTALLED)
	$(PY) -m pytest -m fast

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(INSTALLED)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# TF Serving's API as this repository's typed package (tfs_api), from the installed protos.
protos: $(INSTALLED)
	$(PY) -m tfs_api.regenerate

# The main job: model server and dashboard at once, the trainer in the background when the model has
# no version yet; the server's flags come from docker-compose.yml. Ctrl-C stops all of them.
up: $(INSTALLED)
	@exec $(PY) -m stack --model-dir='$(MODEL_DIR)' --train-args='$(TRAIN_ARGS)' \
		--grpc-port=$(GRPC_PORT) --rest-port=$(REST_PORT) --dashboard-port=$(DASHBOARD_PORT) --host='$(HOST)' $(if $(filter 1,$(VERBOSE)),--verbose)

train: $(INSTALLED)
	$(PY) -m trainer --model-dir '$(MODEL_DIR)' --model-name '$(MODEL_NAME)' $(TRAIN_ARGS)

# The hostile-client drill: the server with docker-compose.yml's flags under bounded attacks (a minute
# or two); `make test` runs it too. DRILL_ARGS='--model-dir models' drills the model `make up` serves.
drill: $(INSTALLED)
	$(PY) bench/drill.py $(DRILL_ARGS)

bench-train: $(INSTALLED)
	$(PY) bench/train.py

bench-serve: $(INSTALLED)
	$(PY) bench/serve.py

# Needs Docker (or starts Debian's engine, as the Docker tests do).
bench-replicas: $(INSTALLED)
	$(PY) bench/replicas.py

bench-uploads: $(INSTALLED)
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/uploads.py

# Where the server's time goes under load (py-spy), for the benchmark notes.
bench-profile: $(INSTALLED)
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/profile.py

# Our server against Triton (PyPI's nvidia-pytriton bundles tritonserver), side by side in one run.
# Triton's client wants numpy 1, so the peer gets its own venv, .venv-peers, from the `peers` extra.
bench-peers: $(INSTALLED)
	test -x .venv-peers/bin/python || $(PYTHON) -m venv .venv-peers
	.venv-peers/bin/python -m pip install --quiet '.[peers]'
	$(PY) bench/peers.py

# The handwriting set beyond MNIST (data/handwriting/): fonts and pen strokes fetched by package name
# (npm, apt), rendered and normalised as uploads are. Deterministic from --seed; commit what it writes.
handwriting-data: $(INSTALLED)
	$(PY) -m trainer.handwriting
