# ascendra-proxy image: the proxy, the engine emulator and the load generator.
#
#   docker build -t ascendra-proxy:local .
#   docker run --rm -p 127.0.0.1:8000:8000 ascendra-proxy:local serve --config /etc/ascendra/compose.yaml
#   docker run --rm ascendra-proxy:local emulate --flavor vllm --host 0.0.0.0 --port 8000 ...
#   docker run --rm --entrypoint loadgen ascendra-proxy:local run --url http://proxy:8000 ...
#
# Three stages, so that a source change rebuilds one small layer: `deps` installs the exact
# runtime dependency set (requirements.lock, every package pinned, `--no-deps`) into a
# virtualenv; `wheel` builds the project's wheel with a pinned build backend
# (deploy/build-requirements.lock); the runtime stage copies the virtualenv onto a clean
# base, installs the wheel into it offline, checks the dependency set (`pip check`) and runs
# as an unprivileged user.  Regenerate the lock with deploy/lock.sh.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/ascendra
COPY requirements.lock /tmp/
RUN /opt/ascendra/bin/pip install --no-deps -r /tmp/requirements.lock \
 && find /opt/ascendra -name __pycache__ -prune -exec rm -rf {} +

FROM deps AS wheel
COPY deploy/build-requirements.lock /tmp/
RUN /opt/ascendra/bin/pip install -r /tmp/build-requirements.lock
COPY pyproject.toml README.md* /src/
COPY ascendra_proxy /src/ascendra_proxy
COPY loadgen /src/loadgen
RUN /opt/ascendra/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheel /src

FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# libgomp1: OpenMP runtime that LightGBM's shared library links against.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && useradd --system --uid 10001 --user-group --create-home --home-dir /home/ascendra ascendra
COPY --from=deps /opt/ascendra /opt/ascendra
COPY --from=wheel /wheel /tmp/wheel
RUN /opt/ascendra/bin/pip install --no-deps --no-index /tmp/wheel/*.whl \
 && /opt/ascendra/bin/pip check \
 && rm -rf /tmp/wheel \
 && find /opt/ascendra -name __pycache__ -prune -exec rm -rf {} +
COPY configs /etc/ascendra
ENV PATH=/opt/ascendra/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ASCENDRA_HEALTH_URL=http://127.0.0.1:8000/health
USER ascendra
WORKDIR /home/ascendra
EXPOSE 8000
# The proxy and the emulator both answer GET /health; a service on another port or path
# sets ASCENDRA_HEALTH_URL (compose does that for the proxy's /ready).
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['ASCENDRA_HEALTH_URL'], timeout=2)"]
ENTRYPOINT ["ascendra-proxy"]
CMD ["serve", "--config", "/etc/ascendra/compose.yaml"]
