#!/usr/bin/env bash
# Regenerate requirements.lock: the exact runtime dependency set of the image.
#
# Resolves the [project] dependencies of pyproject.toml inside the same base image the
# Dockerfile uses (so markers and wheels match the container, not the host), then writes
# `pip freeze` of that environment minus the project itself. Dev extras are not included.
#
# usage: deploy/lock.sh [BASE_IMAGE]      (default python:3.11-slim)
set -euo pipefail
base=${1:-python:3.11-slim}
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/requirements.lock"
{
  echo "# Runtime dependencies of ascendra-proxy, resolved in $base by deploy/lock.sh."
  echo "# Regenerate after changing [project] dependencies in pyproject.toml; do not edit by hand."
  docker run --rm -v "$root:/src:ro" "$base" sh -c '
    set -e
    python -m venv /tmp/v >/dev/null
    python -c "import tomllib; print(chr(10).join(tomllib.load(open(\"/src/pyproject.toml\", \"rb\"))[\"project\"][\"dependencies\"]))" >/tmp/deps.txt
    /tmp/v/bin/pip install -q --disable-pip-version-check --no-cache-dir -r /tmp/deps.txt
    /tmp/v/bin/pip freeze --disable-pip-version-check'
} >"$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(grep -vc '^#' "$out") packages)"
