#!/usr/bin/env bash
# The pose-estimator ablation (issue 10; results in BENCHMARKS.md "Pose estimator ablation"):
#   P0: the correspondence P untrained (its descriptors = a fixed random projection of FPFH + untrained residual)
#   A : P trained on the default synthetic scenes (handheld views)
#   B : P trained on the indoor scenes (pipelines/configs/indoor.yaml)
#   C : B + GAN refinement (real TRAIN captures seen unlabeled by D/G only)
#   D : B + pseudo-labelled real TRAIN pairs (FPFH+RANSAC+ICP agreeing with chained ICP; no real labels)
# each evaluated on the VALIDATION split (never trained on) at gaps 1/5/10/20/30 beside identity, ICP and
# FPFH + RANSAC + ICP, with 95% bootstrap intervals (synthseq evaluate).
# Every stage trains STEPS steps from the same initialisation (equal optimisation budget).
# Usage: scripts/experiment.sh [OUT_DIR]   (STEPS=150 PAIRS=8 SEQS=24 by default; ~1.5 h on a busy 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-experiment}
STEPS=${STEPS:-150}
PAIRS=${PAIRS:-8}
SEQS=${SEQS:-24}
SHARED=${SYNTHSEQ_SHARED_DATA:-../shared/data}
R=$SHARED/real
BIN=.venv/bin
for d in "$R/tum_fr1_xyz_a" "$R/tum_fr1_xyz_b" "$R/tum_fr1_rpy" "$R/7scenes_redkitchen"; do
  [ -d "$d" ] || { echo "experiment: $d is absent (needs ../shared/data/real)" >&2; exit 1; }
done
TRAIN_REAL="[$R/tum_fr1_xyz_a,$R/tum_fr1_rpy@0:50,$R/7scenes_redkitchen@0:50]"
VAL=(--real "$R/tum_fr1_xyz_b" --real "$R/tum_fr1_rpy@50:100" --real "$R/7scenes_redkitchen@50:100")

resume() { [ -f "$1/manifest.json" ] && echo --resume || true; }
# default scene with 1 static + 4 handheld cameras (pose training needs camera motion), and the indoor scenes
$BIN/synthseq build default --out "$OUT/default" --num-sequences "$SEQS" --no-progress $(resume "$OUT/default") \
  --set generate.cameras.rig.num_views=1 --set generate.cameras.handheld.num_views=4
$BIN/synthseq build indoor --out "$OUT/indoor" --num-sequences 16 --no-progress $(resume "$OUT/indoor")

train() {  # name, extra --set flags...
  local name=$1; shift
  [ -f "$OUT/runs/$name/checkpoints/last.pt" ] && return 0
  $BIN/synthseq train default --out "$OUT/runs" --threads 1 --no-progress --set name="$name" \
    --set train.max_steps="$STEPS" --set train.checkpoint_interval=50 "$@"
}
train P0 --set train.data="$OUT/default" --set train.max_steps=1 --set train.learning_rate=1.0e-12
train A --set train.data="$OUT/default" --set "train.views=[1,2,3,4]"
train B --set train.data="$OUT/indoor"
train C --set train.data="$OUT/indoor" --set train.use_gan=true --set "train.real=$TRAIN_REAL" \
  --set train.alignment_weight=0 --set train.consistency_weight=0
train D --set train.data="$OUT/indoor" --set "train.real=$TRAIN_REAL" --set train.pseudo_labels.enabled=true \
  --set train.pseudo_labels.max_pairs=6 --set train.alignment_weight=0 --set train.consistency_weight=0

ev=("${VAL[@]}" --gaps 1 5 10 20 30 --max-pairs "$PAIRS" --no-progress --overwrite)
[ -f "$OUT/reports/baselines/metrics.json" ] || \
  $BIN/synthseq evaluate --checkpoint none "${ev[@]}" --methods identity icp fpfh_ransac_icp --out "$OUT/reports/baselines"
for name in P0 A B C D; do
  [ -f "$OUT/reports/$name/metrics.json" ] || \
    $BIN/synthseq evaluate --checkpoint "$OUT/runs/$name" "${ev[@]}" --methods identity ours_coarse ours ours_icp \
      --out "$OUT/reports/$name"
done
echo "experiment: reports in $OUT/reports/{baselines,P0,A,B,C,D}/report.md"
