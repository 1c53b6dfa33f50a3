#!/usr/bin/env bash
# Enrollment that pays: meta-training on mismatch tasks, its fine-tuning baseline, and the per-axis k-shot figures
# (BENCHMARKS.md "Enrollment on mismatch"). Needs ../shared/data. Stages skip what their output already holds.
#
#   bash scripts/enrollment_report.sh            # choices: dev speakers, dev languages, fsdd-dev, digit voices (dev)
#   SPLIT=test bash scripts/enrollment_report.sh # the reported figures: test speakers and test languages, flite voices
#
# MINUTES sets the meta-training budget (default 45), RUNS where runs and corpora go, OUT where reports go.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-${XDG_CACHE_HOME:-$HOME/.cache}/edgemeta/runs/mismatch}"
OUT="${OUT:-reports/whisper/enrollment}"
SPLIT="${SPLIT:-dev}"
MINUTES="${MINUTES:-45}"
SEEDS="${SEEDS:-2}"
SHARED="${EDGEMETA_SHARED_DATA:-../shared/data}"
EDGEMETA=.venv/bin/edgemeta
mkdir -p "$RUNS" "$OUT/$SPLIT"

# 1. the mismatch tasks: 19 training languages, English digit strings; dev and test parts apart
synth() { [ -f "$RUNS/$1/manifest.jsonl" ] || $EDGEMETA synth --out "$RUNS/$1" --no-effects --workers 2 "${@:2}"; }
synth languages-train --languages train --speakers-per-language 3 --clips 20 --seed 0
synth languages-dev --languages dev --speakers-per-language 2 --clips 20 --seed 1
synth languages-test --languages test --speakers-per-language 2 --clips 20 --seed 2
synth digits-train --engine espeak-ng --vocabulary digits --speakers 40 --clips 20 --seed 0
synth digits-dev --engine espeak-ng --vocabulary digits --speakers 6 --clips 20 --seed 1 --unseen-by "$RUNS/digits-train/manifest.jsonl"
[ -f "$RUNS/eval-flite/manifest.jsonl" ] || $EDGEMETA synth --out "$RUNS/eval-flite" --engine flite --speakers 2 --clips 20 --seed 3 --no-effects

# 2. the shipped model as a checkpoint, then Meta-SGD on every axis at once and the fine-tuning baseline's rate
[ -f "$RUNS/builtin.pt" ] || $EDGEMETA checkpoint-from-bundle runtime/builtin "$RUNS/builtin.pt"
TASKS=(--manifest "$RUNS/languages-train/manifest.jsonl" --manifest "$RUNS/digits-train/manifest.jsonl"
       --dev-manifest "$RUNS/languages-dev/manifest.jsonl" --dev-manifest "$RUNS/digits-dev/manifest.jsonl"
       --conditions 1 --k 10 --query 10 --inner-steps 20 --update normalized)
# (a finished run's folder makes this a no-op: meta-train resumes from last.pt and stops at its budget)
$EDGEMETA meta-train --init "$RUNS/builtin.pt" --method meta-sgd --out "$RUNS/meta-sgd" "${TASKS[@]}" --per-step-rates \
    --inner-rate 0.002 --max-rate 0.1 --zero-shot-head init --minutes "$MINUTES" --val-every-minutes 5 --threads 2
[ -f "$RUNS/finetune/last.pt" ] || $EDGEMETA meta-train --init "$RUNS/builtin.pt" --method finetune --out "$RUNS/finetune" "${TASKS[@]}" --threads 2
DECODER=(--lm runtime/builtin/lm.npz --lm-weight 0.5 --char-bonus 1.0 --beam 32)  # the built-in's decoder, chosen on dev speakers
for method in meta-sgd finetune; do
    [ -f "$RUNS/bundles/$method/manifest.json" ] && [ "$RUNS/bundles/$method/manifest.json" -nt "$RUNS/$method/last.pt" ] \
        || $EDGEMETA export "$RUNS/$method/last.pt" "$RUNS/bundles/$method" "${DECODER[@]}"
done

# 3. every axis as the device enrolls (clip checks, guard, beam search + language model, one thread), k = 0 and 10
MODELS=(--model pretrained=runtime/builtin --model finetune="$RUNS/bundles/finetune" --model meta-sgd="$RUNS/bundles/meta-sgd")
evaluate() {  # NAME, then eval arguments
    local name=$1; shift
    [ -f "$OUT/$SPLIT/$name.jsonl" ] || $EDGEMETA eval "$@" "${MODELS[@]}" --methods none,finetune,meta-sgd --k 0,10 --seeds "$SEEDS" \
        --guard --split "$SPLIT" --json "$OUT/$SPLIT/$name.jsonl"
}
evaluate typical --manifest "$SHARED/speechocean762-train/manifest.jsonl"
evaluate channels --manifest "$SHARED/speechocean762-train/manifest.jsonl" --channels telephone,codec,far-field,noisy
evaluate languages --manifest "$RUNS/languages-$SPLIT/manifest.jsonl"
evaluate fsdd --manifest "$SHARED/fsdd-dev/manifest.jsonl"  # the only real digits here: a dev set, reported in both
if [ "$SPLIT" = dev ]; then
    evaluate digit-voices --manifest "$RUNS/digits-dev/manifest.jsonl"
else
    evaluate flite --manifest "$RUNS/eval-flite/manifest.jsonl"
fi
