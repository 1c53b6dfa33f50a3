#!/usr/bin/env bash
# The main job: set up (idempotent), then enroll an unseen voice and transcribe (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/edgemeta demo "$@"
