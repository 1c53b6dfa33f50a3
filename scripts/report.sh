#!/usr/bin/env bash
# Reproduce the saved figures of README/BENCHMARKS.md under reports/ (each JSON stamped with its provenance).
# Needs ../shared/data (speechocean762-train, fsdd-dev) and the recipe's runs (edgemeta recipe --body whisper-tiny.en);
# the previous CNN body's figures are under reports/cnn-gru (RUNS=.../runs/default OUT=reports/cnn-gru).
# Without those runs, saved records can still be re-summarized: edgemeta eval --from-records OLD.jsonl --json NEW.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-${XDG_CACHE_HOME:-$HOME/.cache}/edgemeta/runs/whisper-tiny.en}"
OUT="${OUT:-reports/whisper}"
SEEDS="${SEEDS:-2}"
mkdir -p "$OUT"
# espeak-ng voices whose variant no training speaker of the built-in model used
[ -f "$RUNS/eval-espeak/manifest.jsonl" ] || .venv/bin/edgemeta synth --out "$RUNS/eval-espeak" --engine espeak-ng --speakers 8 --clips 20 --seed 2 --no-effects \
    --unseen-by runtime/builtin
[ -f "$RUNS/eval-flite/manifest.jsonl" ] || .venv/bin/edgemeta synth --out "$RUNS/eval-flite" --engine flite --speakers 2 --clips 20 --seed 3 --no-effects
SHARED="${EDGEMETA_SHARED_DATA:-../shared/data}"
MANIFESTS=(--manifest "$RUNS/eval-espeak/manifest.jsonl" --manifest "$RUNS/eval-flite/manifest.jsonl"
           --manifest "$SHARED/speechocean762-train/manifest.jsonl" --manifest "$SHARED/fsdd-dev/manifest.jsonl")
models=(--model "pretrained=$RUNS/pretrain/last.pt" --model meta-sgd=runtime/builtin)
methods=none,meta-sgd,meta-sgd-scalar  # meta-sgd-scalar and ctc-control: DESIGN.md's two controls
for method in finetune maml fomaml reptile ctc-control; do
    if [ -f "$RUNS/$method/last.pt" ]; then models+=(--model "$method=$RUNS/$method/last.pt"); methods+=",$method"; fi
done
# methods side by side decode best-path (checkpoints have no language model); the device's run below uses the bundle's decoder;
# speechocean762-train is scored on the split's test speakers
.venv/bin/edgemeta eval "${MANIFESTS[@]}" "${models[@]}" --methods "$methods" --k 0,1,5,10 --seeds "$SEEDS" --greedy --json "$OUT/kshot.jsonl"
.venv/bin/edgemeta eval "${MANIFESTS[@]}" --model meta-sgd=runtime/builtin --methods none,meta-sgd --k 0,10 --seeds "$SEEDS" --guard --json "$OUT/kshot-guard.jsonl"
.venv/bin/python -m edgemeta.benchmarks.decoder_weights --manifest "$SHARED/speechocean762-train/manifest.jsonl" \
    --weights 0.5,0.7,1.0,1.4 --bonuses 1,1.5,2,3 --json "$OUT/decoder-weights.json"
.venv/bin/python -m edgemeta.benchmarks.decoder_weights --manifest "$SHARED/fsdd-dev/manifest.jsonl" --words examples/digits.txt \
    --weights 0.25,0.5,1,2 --bonuses 1,2,3 --json "$OUT/word-list-weights.json"
.venv/bin/python -m edgemeta.benchmarks.transcript_check --manifest "$SHARED/speechocean762-train/manifest.jsonl" \
    --manifest "$RUNS/eval-flite/manifest.jsonl" --manifest "$SHARED/fsdd-dev/manifest.jsonl" --json "$OUT/transcript-check.jsonl"
.venv/bin/edgemeta bench peers --manifest "$SHARED/speechocean762-train/manifest.jsonl" --manifest "$SHARED/fsdd-dev/manifest.jsonl" \
    --manifest "$RUNS/eval-flite/manifest.jsonl" --speakers 8 --k 10 --json "$OUT/peers-test.jsonl" --plot "$OUT/peers-test.png"
# the built-in bundle on the device, the main job (no recipe runs needed)
.venv/bin/python -m edgemeta.benchmarks.device_runtime --k 10 --repeats 3 --live --json "$OUT/device-runtime.json"
.venv/bin/edgemeta demo --no-live --json "$OUT/demo.json"
# meta-training throughput, measured on the CNN body (the whole model in the inner loop): always under reports/cnn-gru
.venv/bin/python -m edgemeta.benchmarks.meta_throughput --frozen-body --steps 3 --json reports/cnn-gru/meta-throughput-frozen-body.json
.venv/bin/python -m edgemeta.benchmarks.meta_throughput --steps 3 --json reports/cnn-gru/meta-throughput-whole-model.json
