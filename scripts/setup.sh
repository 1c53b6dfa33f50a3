#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine: system packages, .venv, editable install.
# Quick when already done: each step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(espeak-ng festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts flite sox
              pulseaudio pulseaudio-utils libportaudio2 libsndfile1)
# The torch/torchaudio pair checked for this project (DESIGN.md): both CUDA-linked PyPI wheels, CPU use.
TORCH_PINS=(torch==2.14.1 torchaudio==2.11.0)

missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi

stamp=.venv/.edgemeta-installed
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing Python packages into .venv (first time: about 3 minutes)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q "${TORCH_PINS[@]}"
    .venv/bin/python -m pip install -q -e ".[train,bench,test]"
    echo "$want" > "$stamp"
fi
