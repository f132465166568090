# syntax=docker/dockerfile:1
# Multi-stage build: the first stage builds a virtualenv, the final stage holds only the
# runtime (Python, the venv) and runs as an unprivileged user.
#
# BASE_IMAGE must provide python3 (3.11+) with the venv module. The default is the official
# slim image; where the public registry is unreachable, pass any local Debian-based image that
# has python3 and python3-venv, e.g. one made with debootstrap + docker import.
ARG BASE_IMAGE=python:3.12-slim-bookworm

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
    && /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/pip uninstall --yes pip

FROM ${BASE_IMAGE}
COPY --from=build /opt/venv /opt/venv
# A fixed numeric UID so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
EXPOSE 10042
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:10042/healthz', timeout=4)"]
ENTRYPOINT ["finetune-exporter"]
CMD ["serve"]
