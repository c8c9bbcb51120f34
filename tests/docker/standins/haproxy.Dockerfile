# A stand-in for the official haproxy image, for machines that cannot pull it: Debian bookworm's HAProxy
# 2.6, reading its config where the official image does. Built by tests/docker/engine.py, only when the
# official image cannot be pulled.
ARG ROOTFS
FROM ${ROOTFS}
RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /usr/local/etc/haproxy
USER haproxy
STOPSIGNAL SIGUSR1
CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
