# A stand-in for the official python image (python:3.11.x-slim-bookworm), for machines that cannot pull
# it: Debian bookworm's Python 3.11 in a venv at /usr/local, so `python` and `pip` are on PATH as in the
# official image. Built by tests/docker/engine.py, only when the official image cannot be pulled.
ARG ROOTFS
FROM ${ROOTFS}
ENV LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /usr/local
# The machine's CA bundle, after apt (whose ca-certificates would replace it): pip inside builds reaches
# the package index through this machine's TLS-inspecting proxy.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
