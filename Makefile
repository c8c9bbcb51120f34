# `make test` and `make up` work on a fresh machine with Python 3.11: both build .venv first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
MODEL_DIR ?= models
MODEL_NAME ?= mnist
TRAIN_ARGS ?=

.PHONY: install test lint format up serve dashboard train bench-train bench-serve bench-uploads

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: $(INSTALLED)
	$(PY) -m pytest

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(INSTALLED)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# For now the main job trains and exports a first model when there is none; later it starts the stack.
up: $(INSTALLED)
	@if ls $(MODEL_DIR)/$(MODEL_NAME) 2>/dev/null | grep -qE '^[0-9]+$$'; then \
		echo "$(MODEL_DIR)/$(MODEL_NAME) already has a version; 'make train' exports another"; \
	else \
		$(PY) -m trainer --model-dir $(MODEL_DIR) --model-name $(MODEL_NAME) $(TRAIN_ARGS); \
	fi

# The model server and the dashboard, each in the foreground (make up will start all three together).
serve: $(INSTALLED)
	$(PY) -m serving --port=8500 --rest_api_port=8501 --model_name=$(MODEL_NAME) \
		--model_base_path=$(abspath $(MODEL_DIR))/$(MODEL_NAME) --monitoring_config_file=serving/monitoring.config

dashboard: $(INSTALLED)
	MODEL_DIR=$(MODEL_DIR) MODEL_NAME=$(MODEL_NAME) $(VENV)/bin/streamlit run dashboard/app.py

train: $(INSTALLED)
	$(PY) -m trainer --model-dir $(MODEL_DIR) --model-name $(MODEL_NAME) $(TRAIN_ARGS)

bench-train: $(INSTALLED)
	$(PY) bench/train.py

bench-serve: $(INSTALLED)
	$(PY) bench/serve.py

bench-uploads: $(INSTALLED)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) bench/uploads.py
