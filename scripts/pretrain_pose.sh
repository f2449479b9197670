#!/usr/bin/env bash
# One-command recipe of the shipped pose weights training/weights/pose_match_small.pt (docs/training.md):
# build the synthetic data, label the real TRAIN captures with chained-ICP pseudo-labels (no real ground truth),
# train the correspondence P on the pseudo-labelled real pairs, voxel-sampled as the estimator samples them
# (train.synthetic_weight 0: the ablation in BENCHMARKS.md decided it), and export P + its EMA teacher with the
# run's config and the dataset's build config recorded in the file.
# Usage: scripts/pretrain_pose.sh [OUT_DIR]
#   STEPS=1200 SEQS=16 DATA_CONFIG=indoor SYNTHETIC_WEIGHT=0 by default (~40-60 min on a 2-core CPU);
#   RECIPE=synthetic trains on the synthetic pairs only (the recipe of the weights shipped before 2026-11-29).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-pretrain}
STEPS=${STEPS:-1200}
SEQS=${SEQS:-16}
DATA_CONFIG=${DATA_CONFIG:-indoor}
RECIPE=${RECIPE:-real}
SYNTHETIC_WEIGHT=${SYNTHETIC_WEIGHT:-0}
SHARED=${SYNTHSEQ_SHARED_DATA:-../shared/data}
R=$SHARED/real
BIN=.venv/bin
views=()
if [ "$DATA_CONFIG" = default ]; then  # 1 static + 4 handheld cameras; pairs from the handheld views only
  scene=(--set generate.cameras.rig.num_views=1 --set generate.cameras.handheld.num_views=4)
  views=(--set "train.views=[1,2,3,4]")
else
  scene=()
fi
recipe=()
if [ "$RECIPE" = real ]; then
  for d in "$R/tum_fr1_xyz_a" "$R/tum_fr1_rpy" "$R/7scenes_redkitchen"; do
    [ -d "$d" ] || { echo "pretrain: $d is absent (the real TRAIN captures live in ../shared/data/real)" >&2; exit 1; }
  done
  # the agreed TRAIN split (docs/evaluation.md); their ground truth is never read
  recipe=(--set "train.real=[$R/tum_fr1_xyz_a,$R/tum_fr1_rpy@0:50,$R/7scenes_redkitchen@0:50]"
          --set train.real_sampling=voxel --set train.real_num_points=2048 --set train.real_voxel_draws=3
          --set "train.real_gaps=[1,2,3,5,8,10,15,20,30]"
          --set train.pseudo_labels.enabled=true --set train.pseudo_labels.method=chained
          --set train.pseudo_labels.max_pairs=100 --set train.synthetic_weight="$SYNTHETIC_WEIGHT"
          --set train.pose_weight=0 --set train.model.p_hidden=64
          --set train.alignment_weight=0 --set train.consistency_weight=0 --set train.checkpoint_interval=200)
fi
resume=(); [ -f "$OUT/data/manifest.json" ] && resume=(--resume)
$BIN/synthseq build "$DATA_CONFIG" --out "$OUT/data" --num-sequences "$SEQS" --no-progress "${resume[@]}" "${scene[@]}"
if [ -f "$OUT/runs/pose/checkpoints/last.pt" ]; then
  $BIN/synthseq train --resume "$OUT/runs/pose" --threads 1 --no-progress
else
  $BIN/synthseq train "$DATA_CONFIG" --out "$OUT/runs" --threads 1 --no-progress --set name=pose \
    --set train.data="$OUT/data" --set train.max_steps="$STEPS" --set train.use_gan=false "${views[@]}" "${recipe[@]}"
fi
$BIN/python -c "
import sys
from synthseq.training.estimator import export_pose_weights
print(export_pose_weights(sys.argv[1], sys.argv[2], note=sys.argv[3]))
" "$OUT/runs/pose" "$OUT/pose_match_small.pt" \
  "scripts/pretrain_pose.sh: RECIPE=$RECIPE DATA_CONFIG=$DATA_CONFIG SEQS=$SEQS STEPS=$STEPS SYNTHETIC_WEIGHT=$SYNTHETIC_WEIGHT (use_gan false)"
echo "pretrain: $OUT/pose_match_small.pt (copy to training/weights/ to ship it)"
