#!/usr/bin/env bash
# The pose-estimator ablation (issue 10; results in BENCHMARKS.md "Pose estimator" sections):
#   P0: the correspondence P untrained (its descriptors = a fixed random projection of FPFH + untrained residual)
#   A : P trained on the default synthetic scenes (handheld views), default.yaml's synthetic recipe
#   B : the same on the indoor scenes (pipelines/configs/indoor.yaml's scenes)
#   C : B + GAN refinement (the real TRAIN captures seen unlabeled by D/G only)
#   D : the shipped recipe: pseudo-labelled real TRAIN pairs only (chained ICP, indoor.yaml; no real labels)
#   E : D + the synthetic indoor pairs at weight 1 (train.synthetic_weight 1)
#   F : one self-training round after D: labels refreshed by D's own estimator (pseudo_labels.method model,
#       cycle-checked), STEPS_SELF steps from D's weights; F_ctl: the same steps from D on D's labels (control)
# each evaluated on the VALIDATION split (never trained on) at gaps 1/5/10/20/30 beside identity, ICP and
# FPFH + RANSAC + ICP, with 95% bootstrap intervals (synthseq evaluate), and by the inlier ratio of their
# descriptors' mutual matches against FPFH's on the same pairs (bench/bench_descriptors.py, paired intervals).
# reports/ablation.md puts every stage side by side, paired against FPFH + RANSAC + ICP and against D
# (scripts/ablation_table.py).
# Stages P0-E train STEPS steps from the same initialisation (equal optimisation budget).
# Usage: scripts/experiment.sh [OUT_DIR]
#   STAGES="A B" trains and evaluates only those stages (F and F_ctl need D); BASELINES=0 skips the identity / ICP /
#   FPFH rows; DESCRIPTORS=0 skips bench_descriptors; METHODS sets the evaluated rows of each stage. Two shells with
#   disjoint STAGES share one OUT_DIR (run the first until its builds are done before starting the second).
#   STEPS=400 STEPS_SELF=300 PAIRS=8 SEQS=24 INDOOR_SEQS=16 PSEUDO_PAIRS=100 by default: ~4 h on a 2-core CPU (the shipped weights are D at
#   1200 steps); train.device auto puts the runs on a GPU when there is one.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-experiment}
STEPS=${STEPS:-400}
STEPS_SELF=${STEPS_SELF:-300}
PAIRS=${PAIRS:-8}
SEQS=${SEQS:-24}
INDOOR_SEQS=${INDOOR_SEQS:-16}
PSEUDO_PAIRS=${PSEUDO_PAIRS:-100}  # pseudo-labelled TRAIN pairs per capture and gap (D, E, F)
read -r -a stages <<< "${STAGES:-P0 A B C D E F F_ctl}"
read -r -a methods <<< "${METHODS:-identity ours_coarse ours ours_icp ours_fallback}"
BASELINES=${BASELINES:-1}
DESCRIPTORS=${DESCRIPTORS:-1}
for s in "${stages[@]}"; do
  case " P0 A B C D E F F_ctl " in *" $s "*) ;; *) echo "experiment: STAGES: unknown stage '$s' (P0 A B C D E F F_ctl)" >&2; exit 1;; esac
done
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
$BIN/synthseq build indoor --out "$OUT/indoor" --num-sequences "$INDOOR_SEQS" --no-progress $(resume "$OUT/indoor")

train() {  # config, name, extra --set flags...
  local config=$1 name=$2; shift 2
  case " ${stages[*]} " in *" $name "*) ;; *) return 0;; esac
  [ -f "$OUT/runs/$name/checkpoints/last.pt" ] && return 0
  $BIN/synthseq train "$config" --out "$OUT/runs" --threads 1 --no-progress --set name="$name" \
    --set train.max_steps="$STEPS" --set train.checkpoint_interval=100 "$@"
}
real=(--set "train.real=$TRAIN_REAL")
train default P0 --set train.data="$OUT/indoor" --set train.max_steps=1 --set train.learning_rate=1.0e-12
train default A --set train.data="$OUT/default" --set "train.views=[1,2,3,4]"
train default B --set train.data="$OUT/indoor"
train default C --set train.data="$OUT/indoor" --set train.use_gan=true "${real[@]}" \
  --set train.alignment_weight=0 --set train.consistency_weight=0
# D, E: indoor.yaml's recipe (voxel-sampled real pairs, chained-ICP labels, descriptor loss); one labelling shared
labels=(--set train.pseudo_labels.cache="$OUT/pseudo_labels_chained.json" --set train.pseudo_labels.max_pairs="$PSEUDO_PAIRS")
train indoor D --set train.data="$OUT/indoor" "${real[@]}" "${labels[@]}"
train indoor E --set train.data="$OUT/indoor" "${real[@]}" "${labels[@]}" --set train.synthetic_weight=1
self=(--set train.data="$OUT/indoor" "${real[@]}" --set train.init="$OUT/runs/D/checkpoints/last.pt"
      --set train.max_steps="$STEPS_SELF" --set train.pseudo_labels.max_pairs="$PSEUDO_PAIRS")
train indoor F "${self[@]}" --set train.pseudo_labels.method=model \
  --set train.pseudo_labels.cache="$OUT/pseudo_labels_model_D.json"
train indoor F_ctl "${self[@]}" "${labels[@]}"

# the TUM trajectory export (evo) is not part of the ablation: trajectory_pairs 0
ev=("${VAL[@]}" --gaps 1 5 10 20 30 --max-pairs "$PAIRS" --no-progress --overwrite --set evaluate.trajectory_pairs=0)
[ "$BASELINES" = 0 ] || [ -f "$OUT/reports/baselines/metrics.json" ] || \
  $BIN/synthseq evaluate --checkpoint none "${ev[@]}" --methods identity icp fpfh_ransac_icp --out "$OUT/reports/baselines"
ck=()
for name in "${stages[@]}"; do
  ck+=(--checkpoint "$name=$OUT/runs/$name")
  [ -f "$OUT/reports/$name/metrics.json" ] || \
    $BIN/synthseq evaluate --checkpoint "$OUT/runs/$name" "${ev[@]}" --methods "${methods[@]}" \
      --out "$OUT/reports/$name"
done
[ "$DESCRIPTORS" = 0 ] || [ ${#stages[@]} = 0 ] || $BIN/python bench/bench_descriptors.py "${ck[@]}" --no-untrained "${VAL[@]}" --pairs 6 \
  --json "$OUT/reports/descriptors.json" > "$OUT/reports/descriptors.md"
# one table over every stage evaluated so far (this shell's and any other's), paired against D, the shipped recipe
done_stages=()
for name in P0 A B C D E F F_ctl; do
  [ -f "$OUT/reports/$name/pairs.csv" ] && done_stages+=("$name=$OUT/reports/$name")
done
ref=(); [ -f "$OUT/reports/D/pairs.csv" ] && ref=(--reference D)
base=(); [ -f "$OUT/reports/baselines/pairs.csv" ] && base=(--baseline "$OUT/reports/baselines")
[ ${#done_stages[@]} = 0 ] || $BIN/python scripts/ablation_table.py "${done_stages[@]}" "${base[@]}" "${ref[@]}" \
  --out "$OUT/reports/ablation.md"
desc=""; [ "$DESCRIPTORS" = 0 ] || [ ${#stages[@]} = 0 ] || desc=", $OUT/reports/descriptors.md"
echo "experiment: reports in $OUT/reports/{baselines,$(IFS=,; echo "${stages[*]}")}/report.md$desc; the table: $OUT/reports/ablation.md"
