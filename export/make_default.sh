#!/usr/bin/env bash
# Export the embedded default model into edge_agent/models/: default.onnx + default.card.json (<= 1 MB),
# INT8 unless INT8 is slower than FP32 on this CPU (the card says which and why), then run the release
# gate on it so the agent accepts it without --allow-ungated.
#
# Usage: export/make_default.sh CHECKPOINT [URBANSOUND8K_ROOT] [TRAIN_COMMAND]
#   CHECKPOINT         the default checkpoint named in training/results/README.md
#   URBANSOUND8K_ROOT  calibration and held-out clips (default: ../shared/data/urbansound8k-subset)
#   TRAIN_COMMAND      the 'earshot train ...' command that made CHECKPOINT, recorded in the card
# Environment: VERSION (default: today's UTC date), GATE=0 to skip the gate, KEEP_TWIN=0 to drop the
# twin (the other precision, kept for 'earshot bench --compare-model' while model + twin <= 1 MB),
# SOURCES_ROOT=DIR (the folder holding every source: an open-set model is checked and INT8-calibrated on
# each of them), THRESHOLDS=FILE (calibrated thresholds, as 'earshot evaluate --calibrate' writes them),
# CALIBRATION_CLIPS=N (INT8 calibration clips; export's default when unset).
set -euo pipefail
cd "$(dirname "$0")/.."

checkpoint=${1:?usage: export/make_default.sh CHECKPOINT [URBANSOUND8K_ROOT] [TRAIN_COMMAND]}
data_root=${2:-../shared/data/urbansound8k-subset}
train_command=${3:-}
version=${VERSION:-$(date -u +%Y.%m.%d)}
out=edge_agent/models/default.onnx
limit=$((1024 * 1024))

mkdir -p edge_agent/models
rm -f edge_agent/models/default.onnx edge_agent/models/default.*.onnx edge_agent/models/default.card.json
# The twin (the other precision) stays only while model + twin fit the 1 MB budget.
budget=$limit
[ "${KEEP_TWIN:-1}" = 0 ] && budget=1
args=("$checkpoint" --out "$out" --int8 --calibration-data "$data_root" --name earshot-default
      --version "$version" --twin-budget "$budget")
[ -n "$train_command" ] && args+=(--train-command "$train_command")
[ -n "${SOURCES_ROOT:-}" ] && args+=(--data-root "$SOURCES_ROOT")
[ -n "${THRESHOLDS:-}" ] && args+=(--thresholds "$THRESHOLDS")
[ -n "${CALIBRATION_CLIPS:-}" ] && args+=(--calibration-clips "$CALIBRATION_CLIPS")
earshot export "${args[@]}"

size=$(stat -c %s "$out")
if [ "$size" -gt "$limit" ]; then
  echo "make_default: $out is $size bytes, over the 1 MB budget for the embedded model" >&2
  exit 1
fi
if [ "${GATE:-1}" != 0 ]; then
  earshot gate "$out" --data-root "$data_root" --report "${GATE_REPORT:-gate-report}"
fi
echo "make_default: wrote $out and edge_agent/models/default.card.json; commit both (and the twin, if kept)"
