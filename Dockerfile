# One image per part of the platform, each a stage on one of two shared bases; docker-compose.yml picks
# them with `target:`. By hand: docker build --target serving -t mnist-platform-serving .
# Each stage installs its own extra of pyproject.toml (the one place pins live) before any of its code is
# copied, so a code change rebuilds only the last layers. pyproject.toml is copied alone: pip builds the
# project with no packages in it (the code is found on PYTHONPATH), just for its extra's requirements.
# hadolint's DL3013 ("pin versions") cannot see that an extra's pins are in pyproject.toml, hence its
# ignore comments.
FROM python:3.11.14-slim-bookworm AS slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app
WORKDIR /app
RUN useradd --no-log-init --uid 10001 --create-home app && pip install pip==26.3
COPY pyproject.toml .

# TensorFlow and LiteRT, most of the trainer's and the server's weight: one layer, stored once for both.
FROM slim AS base
# hadolint ignore=DL3013
RUN pip install '.[tensorflow]'

# The trainer as a one-shot job (the compose service `trainer`): trains, exports into /models, exits.
FROM base AS trainer
# hadolint ignore=DL3013
RUN pip install '.[trainer]'
COPY data data
COPY tfquiet tfquiet
COPY cliargs cliargs
COPY contract contract
COPY tfs_api tfs_api
# The server's loader too: the trainer loads each version by TF Serving's rules before publishing it.
COPY serving serving
COPY trainer trainer
# /models is created here, owned by the user that writes it, so a fresh named volume starts writable.
RUN mkdir /models && chown 10001:10001 /models
USER 10001:10001
ENTRYPOINT ["python", "-m", "trainer"]
CMD ["--model-dir", "/models", "--skip-if-trained"]

# This project's TF-Serving-compatible server for versions that run from model.tflite (the compose
# profile `embedded` and deploy/k8s, both with --prefer_tflite_model): no TensorFlow, which it never
# loads for them. A version with no model.tflite fails to load here, saying to use `serving`.
FROM slim AS serving-lite
# hadolint ignore=DL3013
RUN pip install '.[serving-lite]'
COPY tfquiet tfquiet
COPY cliargs cliargs
COPY contract contract
COPY tfs_api tfs_api
COPY serving serving
USER 10001:10001
EXPOSE 8500 8501
ENTRYPOINT ["python", "-m", "serving"]
CMD ["--port=8500", "--rest_api_port=8501", "--model_name=mnist", "--model_base_path=/models/mnist", \
     "--prefer_tflite_model=true"]

# The same server with TensorFlow, for SavedModels: the same flags and config files as the
# tensorflow/serving image it stands in for.
FROM base AS serving
# hadolint ignore=DL3013
RUN pip install '.[serving]'
COPY tfquiet tfquiet
COPY cliargs cliargs
COPY contract contract
COPY tfs_api tfs_api
COPY serving serving
USER 10001:10001
EXPOSE 8500 8501
ENTRYPOINT ["python", "-m", "serving"]
CMD ["--port=8500", "--rest_api_port=8501", "--model_name=mnist", "--model_base_path=/models/mnist"]

# The Streamlit dashboard on port 8080: reads the model volume, talks gRPC to the model server. It runs
# no model, so it has no TensorFlow: TF Serving's API comes from tfs_api.
FROM slim AS dashboard
# hadolint ignore=DL3013
RUN pip install '.[dashboard]'
COPY .streamlit .streamlit
COPY contract contract
COPY tfs_api tfs_api
COPY client client
COPY dashboard dashboard
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/_stcore/health', timeout=2)"]
# Every interface of the container (its published port is the host's decision, loopback by default).
ENTRYPOINT ["python", "-m", "streamlit", "run", "dashboard/app.py", "--server.address=0.0.0.0"]
