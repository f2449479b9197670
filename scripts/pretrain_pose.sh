#!/usr/bin/env bash
# One-command recipe of the shipped pose weights training/weights/pose_match_small.pt (docs/training.md):
# build the synthetic data, train the correspondence P on it (no real data, no GAN), and export P + its EMA
# teacher with the run's config and the dataset's build config recorded in the file.
# Usage: scripts/pretrain_pose.sh [OUT_DIR]   (STEPS=150 SEQS=24 DATA_CONFIG=default by default)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-pretrain}
STEPS=${STEPS:-150}
SEQS=${SEQS:-24}
DATA_CONFIG=${DATA_CONFIG:-default}
BIN=.venv/bin
views=()
if [ "$DATA_CONFIG" = default ]; then  # 1 static + 4 handheld cameras; pairs from the handheld views only
  scene=(--set generate.cameras.rig.num_views=1 --set generate.cameras.handheld.num_views=4)
  views=(--set "train.views=[1,2,3,4]")
else
  scene=()
fi
resume=(); [ -f "$OUT/data/manifest.json" ] && resume=(--resume)
$BIN/synthseq build "$DATA_CONFIG" --out "$OUT/data" --num-sequences "$SEQS" --no-progress "${resume[@]}" "${scene[@]}"
[ -f "$OUT/runs/pose/checkpoints/last.pt" ] || \
  $BIN/synthseq train default --out "$OUT/runs" --threads 1 --no-progress --set name=pose \
    --set train.data="$OUT/data" --set train.max_steps="$STEPS" "${views[@]}"
$BIN/python -c "
import sys
from synthseq.training.estimator import export_pose_weights
print(export_pose_weights(sys.argv[1], sys.argv[2], note=sys.argv[3]))
" "$OUT/runs/pose" "$OUT/pose_match_small.pt" \
  "scripts/pretrain_pose.sh: DATA_CONFIG=$DATA_CONFIG SEQS=$SEQS STEPS=$STEPS (synthetic only, use_gan false)"
echo "pretrain: $OUT/pose_match_small.pt (copy to training/weights/ to ship it)"
