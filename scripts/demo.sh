#!/usr/bin/env bash
# The main job (README's first command, via `make demo`): Ray build -> train -> evaluate -> report, with the
# agreed split (docs/evaluation.md): training sees the TRAIN part of the real captures (unlabeled) and a
# synthetic build; the report measures only data training never saw: the VALIDATION part of the real captures
# and a synthetic test set built with another seed (`synthseq evaluate` refuses training data anyway).
# Re-running continues where it stopped: the builds resume, finished training is reused, the report is redone.
# Sizes can be changed with environment variables, e.g. DEMO_STEPS=2000 make demo.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl}
BIN=.venv/bin
SHARED=${SYNTHSEQ_SHARED_DATA:-../shared/data}
CONFIG=${DEMO_CONFIG:-indoor}                 # bundled config (indoor scenes like the real captures) or a YAML
DATA=${DEMO_DATA:-data/demo}                  # synthetic training set (build seed DEMO_SEED)
TEST_DATA=${DEMO_TEST_DATA:-data/demo-test}   # synthetic test set: same config, seed DEMO_TEST_SEED
SEED=${DEMO_SEED:-0}
TEST_SEED=${DEMO_TEST_SEED:-1}
TEST_SEQUENCES=${DEMO_TEST_SEQUENCES:-2}
RUNS=${DEMO_RUNS:-runs}
NAME=${DEMO_NAME:-demo}
REPORT=${DEMO_REPORT:-reports/demo}
STEPS=${DEMO_STEPS:-100}
# P starts from the shipped weights (trained by scripts/pretrain_pose.sh on indoor scenes, its config and data
# recorded inside) and is fine-tuned here for STEPS steps; DEMO_INIT= (empty) trains from scratch.
INIT=${DEMO_INIT-training/weights/pose_match_small.pt}
PAIRS=${DEMO_PAIRS:-6}                        # pairs per (sequence, gap), spread over each sequence
PSEUDO_PAIRS=${DEMO_PSEUDO_PAIRS:-20}         # TRAIN pairs per (capture, gap) given chained-ICP pseudo-labels
GAPS=${DEMO_GAPS:-1 5 10 20 30}
TRAJ_PAIRS=${DEMO_TRAJECTORY_PAIRS:-8}        # contiguous gap-1 pairs chained into the TUM trajectories
# views the trainer draws synthetic pairs from: all for indoor (every view is a handheld camera); for
# default.yaml view 4 is the handheld camera (views 0-3 are the static rig, whose relative pose is identity)
if [ -z "${DEMO_VIEWS+x}" ]; then
  if [ "$CONFIG" = default ]; then DEMO_VIEWS="[4]"; else DEMO_VIEWS=""; fi
fi
# The agreed split of the shared real captures (PATH@START:STOP = frames START..STOP-1).
TRAIN_REAL=${DEMO_TRAIN_REAL:-"real/tum_fr1_xyz_a real/tum_fr1_rpy@0:50 real/7scenes_redkitchen@0:50"}
VAL_REAL=${DEMO_VAL_REAL:-"real/tum_fr1_xyz_b real/tum_fr1_rpy@50:100 real/7scenes_redkitchen@50:100"}

present() {  # the captures of a split whose folder exists under $SHARED
  local out=() cap
  for cap in $1; do
    if [ -d "$SHARED/${cap%@*}" ]; then out+=("$SHARED/$cap"); else
      echo "[demo] $SHARED/${cap%@*} is absent: skipping $cap (real captures are expected in ../shared/data/real)" >&2
    fi
  done
  echo "${out[*]:-}"
}
train_real=($(present "$TRAIN_REAL"))
val_real=($(present "$VAL_REAL"))

if [ ! -d "$SHARED/meshes" ]; then
  echo "[demo] $SHARED/meshes is absent: building with primitives only"
  mesh_override=(--set generate.objects.mesh_dir=null --set generate.objects.mesh_ratio=0.0)
else
  mesh_override=()
fi

build() {  # build CONFIG into $1 with seed $2 (resumed when a manifest is there), then verify it
  local out=$1 seed=$2; shift 2
  local resume=(); [ -f "$out/manifest.json" ] && resume=(--resume)
  $BIN/synthseq build "$CONFIG" --out "$out" --seed "$seed" "${resume[@]}" "${mesh_override[@]}" "$@"
  $BIN/synthseq verify "$out"
}

echo "[demo] 1/4 build the synthetic training set: synthseq build $CONFIG --out $DATA --seed $SEED"
build "$DATA" "$SEED"
echo "[demo] 2/4 build a held-out synthetic test set: --seed $TEST_SEED, $TEST_SEQUENCES sequences"
build "$TEST_DATA" "$TEST_SEED" --num-sequences "$TEST_SEQUENCES"

echo "[demo] 3/4 train: $STEPS steps on the CPU from ${INIT:-a random initialisation}, real TRAIN split: ${train_real[*]:-none}"
real_yaml="[$(IFS=,; echo "${train_real[*]:-}")]"
views=(); [ -n "$DEMO_VIEWS" ] && views=(--set "train.views=$DEMO_VIEWS")
if [ -f "$RUNS/$NAME/checkpoints/last.pt" ] && [ -z "${DEMO_RETRAIN:-}" ]; then
  echo "[demo] $RUNS/$NAME already trained (DEMO_RETRAIN=1 to train again)"
else
  init=(); [ -n "$INIT" ] && init=(--set train.init="$INIT")
  $BIN/synthseq train "$CONFIG" --out "$RUNS" --name "$NAME" --overwrite --threads 1 --set train.data="$DATA" \
    --set train.real="$real_yaml" --set train.max_steps="$STEPS" \
    --set train.pseudo_labels.max_pairs="$PSEUDO_PAIRS" "${views[@]}" "${init[@]}"
fi

echo "[demo] 4/4 evaluate on the VALIDATION split only: ${val_real[*]:-none} + $TEST_DATA"
real_args=()
for cap in "${val_real[@]}"; do real_args+=(--real "$cap"); done
# shellcheck disable=SC2086  # GAPS is a list of numbers
$BIN/synthseq evaluate --checkpoint "$RUNS/$NAME" "${real_args[@]}" --synthetic "$TEST_DATA" --gaps $GAPS \
  --max-pairs "$PAIRS" --set evaluate.synthetic_sequences="$TEST_SEQUENCES" \
  --set evaluate.trajectory_pairs="$TRAJ_PAIRS" --out "$REPORT" --overwrite
echo "[demo] done. Report: $REPORT/report.md  (plots in $REPORT/, per-pair results in $REPORT/pairs.csv)"
