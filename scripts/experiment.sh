#!/usr/bin/env bash
# The ablation of issue 5 on the real dev sequences (results in README.md and BENCHMARKS.md):
#   A: P trained on raw synthetic pairs only (use_gan false)
#   B: + GAN refinement (real captures used unlabeled by D/G only; no real-pair pose losses)
#   C: + GAN + self-supervised real pairs (alignment + EMA-teacher consistency)
# beside ICP and FPFH + RANSAC + ICP, evaluated on TUM fr1/rpy and 7-Scenes at gaps 1/5/10.
# Usage: scripts/experiment.sh [OUT_DIR]   (STEPS=800 SEQS=32 PAIRS=20 by default; ~40 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl}
OUT=${1:-experiment}
STEPS=${STEPS:-800}
SEQS=${SEQS:-32}
PAIRS=${PAIRS:-20}
SHARED=${SYNTHSEQ_SHARED_DATA:-../shared/data}
TUM=$SHARED/real/tum_fr1_rpy
KITCHEN=$SHARED/real/7scenes_redkitchen
BIN=.venv/bin
for d in "$TUM" "$KITCHEN"; do
  [ -d "$d" ] || { echo "experiment: $d is absent (needs ../shared/data/real)" >&2; exit 1; }
done
# The demo scene with 1 static + 4 moving (fr1/rpy-like) cameras: pose training needs camera motion.
scene=(--set generate.cameras.rig.num_views=1 --set generate.cameras.handheld.num_views=4)
resume() { [ -f "$1/manifest.json" ] && echo --resume || true; }
$BIN/synthseq build default --out "$OUT/data" --num-sequences "$SEQS" --no-progress $(resume "$OUT/data") "${scene[@]}"
$BIN/synthseq build default --out "$OUT/test" --num-sequences 4 --seed 1 --no-progress $(resume "$OUT/test") "${scene[@]}"

train() {  # name, extra --set flags...
  local name=$1; shift
  [ -f "$OUT/runs/$name/checkpoints/last.pt" ] && return 0
  $BIN/synthseq train default --out "$OUT/runs" --threads 1 --no-progress --set name="$name" \
    --set train.data="$OUT/data" --set train.max_steps="$STEPS" "$@"
}
train A_raw --set train.use_gan=false
train B_gan --set "train.real=[$TUM,$KITCHEN]" --set train.alignment_weight=0 --set train.consistency_weight=0
train C_gan_real --set "train.real=[$TUM,$KITCHEN]"

ev=(--real "$TUM" --real "$KITCHEN" --gaps 1 5 10 --max-pairs "$PAIRS")
$BIN/synthseq evaluate --checkpoint none "${ev[@]}" --out "$OUT/reports/baselines"
for name in A_raw B_gan C_gan_real; do
  $BIN/synthseq evaluate --checkpoint "$OUT/runs/$name" "${ev[@]}" --synthetic "$OUT/test" \
    --methods ours ours_icp --out "$OUT/reports/$name"
done
echo "experiment: reports in $OUT/reports/{baselines,A_raw,B_gan,C_gan_real}/report.md"
