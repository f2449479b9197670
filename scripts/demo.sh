#!/usr/bin/env bash
# The main job (README's first command, via `make demo`): Ray build -> train -> evaluate -> report.
# Re-running continues where it stopped: the build resumes, finished training is reused.
# Sizes can be changed with environment variables, e.g. DEMO_STEPS=2000 make demo.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl}
BIN=.venv/bin
DATA=${DEMO_DATA:-data/demo}
RUNS=${DEMO_RUNS:-runs}
NAME=${DEMO_NAME:-demo}
REPORT=${DEMO_REPORT:-reports/demo}
STEPS=${DEMO_STEPS:-600}
SHARED=${SYNTHSEQ_SHARED_DATA:-../shared/data}

real_args=()
real_list=()
for cap in "$SHARED/real/tum_fr1_rpy" "$SHARED/real/7scenes_redkitchen"; do
  if [ -d "$cap" ]; then
    real_args+=(--real "$cap"); real_list+=("$cap")
  else
    echo "[demo] $cap is absent: skipping it (real captures are expected in ../shared/data/real)"
  fi
done
if [ ! -d "$SHARED/meshes" ]; then
  echo "[demo] $SHARED/meshes is absent: building with primitives only"
  mesh_override=(--set generate.objects.mesh_dir=null --set generate.objects.mesh_ratio=0.0)
else
  mesh_override=()
fi

echo "[demo] 1/3 build: synthseq build default --out $DATA"
resume=(); [ -f "$DATA/manifest.json" ] && resume=(--resume)
$BIN/synthseq build default --out "$DATA" "${resume[@]}" "${mesh_override[@]}"
$BIN/synthseq verify "$DATA"

echo "[demo] 2/3 train: $STEPS steps on the CPU"
real_yaml="[$(IFS=,; echo "${real_list[*]:-}")]"
if [ -f "$RUNS/$NAME/checkpoints/last.pt" ] && [ -z "${DEMO_RETRAIN:-}" ]; then
  echo "[demo] $RUNS/$NAME already trained (DEMO_RETRAIN=1 to train again)"
else
  rm -rf "${RUNS:?}/$NAME"
  # views=[4]: the handheld camera of default.yaml (views 0-3 are the static rig, whose relative
  # camera pose is always the identity); one torch thread is the faster choice on a 2-core machine.
  $BIN/synthseq train default --out "$RUNS" --threads 1 --set name="$NAME" --set train.data="$DATA" \
    --set train.real="$real_yaml" --set train.max_steps="$STEPS" --set "train.views=[4]"
fi

echo "[demo] 3/3 evaluate"
if [ ${#real_args[@]} -eq 0 ]; then
  echo "[demo] no real capture with ground truth found: evaluating on the synthetic set only"
fi
rm -rf "$REPORT"
$BIN/synthseq evaluate --checkpoint "$RUNS/$NAME" "${real_args[@]}" --synthetic "$DATA" --gaps 1 5 10 \
  --max-pairs "${DEMO_PAIRS:-12}" --set evaluate.synthetic_sequences=1 --out "$REPORT"
echo "[demo] done. Report: $REPORT/report.md  (plots in $REPORT/)"
