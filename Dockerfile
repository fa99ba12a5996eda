# ascendra-proxy image: the proxy, the engine emulator and the load generator.
#
#   docker build -t ascendra-proxy:local .
#   docker run --rm -p 127.0.0.1:8000:8000 ascendra-proxy:local serve --config /etc/ascendra/compose.yaml
#   docker run --rm ascendra-proxy:local emulate --flavor vllm --host 0.0.0.0 --port 8000 ...
#   docker run --rm --entrypoint loadgen ascendra-proxy:local run --url http://proxy:8000 ...
#
# Two stages: the build stage resolves nothing (every runtime dependency is pinned in
# requirements.lock, the wheel build backend in deploy/build-requirements.lock) and installs
# into a virtualenv; the runtime stage copies that virtualenv onto a clean base and runs as
# an unprivileged user.  Regenerate the lock with deploy/lock.sh.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/ascendra
COPY requirements.lock deploy/build-requirements.lock /tmp/
RUN /opt/ascendra/bin/pip install --no-deps -r /tmp/requirements.lock \
 && /opt/ascendra/bin/pip install -r /tmp/build-requirements.lock
COPY pyproject.toml README.md* /src/
COPY ascendra_proxy /src/ascendra_proxy
COPY loadgen /src/loadgen
RUN /opt/ascendra/bin/pip install --no-deps --no-build-isolation /src \
 && /opt/ascendra/bin/pip check \
 && /opt/ascendra/bin/pip uninstall -q -y pip setuptools wheel \
 && find /opt/ascendra -name __pycache__ -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
# libgomp1: OpenMP runtime that LightGBM's shared library links against.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && useradd --system --uid 10001 --user-group --create-home --home-dir /home/ascendra ascendra
COPY --from=build /opt/ascendra /opt/ascendra
COPY configs /etc/ascendra
ENV PATH=/opt/ascendra/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ASCENDRA_HEALTH_URL=http://127.0.0.1:8000/health \
    ASCENDRA_PROFILE_PATH=/etc/ascendra/profiles
USER ascendra
WORKDIR /home/ascendra
EXPOSE 8000
# The proxy and the emulator both answer GET /health; a service on another port or path
# sets ASCENDRA_HEALTH_URL (compose does that for the proxy's /ready).
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['ASCENDRA_HEALTH_URL'], timeout=2)"]
ENTRYPOINT ["ascendra-proxy"]
CMD ["serve", "--config", "/etc/ascendra/compose.yaml"]
