#!/usr/bin/env bash
# Train the CarDD-taxonomy damage model shipped as segmenter_damage_cardd_lite0 (issue 26, item 2), or continue it.
#
# Data (built once, into git-ignored folders; see ../shared/data/car_damage/cardd_roboflow/PROVENANCE.md):
#   bash ../shared/data/car_damage/cardd_roboflow/build_train_valid.sh GIT_DIR data/cardd
# Then: bash scripts/train_damage_model.sh [RUN_DIR]   (re-run the same command to resume after an interruption)
#
# What it trains on: CarDD train (2,788 photos), lensor_severity train (529; dents and scratches as CarDD's
# classes, its ambiguous "broken" ignored), and 1,095 clean-car photos as hard negatives (the damage filter
# recipe's *train* split of car_parts and Stanford Cars; its test split stays the probe set of bench/cardd.py).
# Model choice on CarDD valid (793). Warm start from the model shipped before (commit 4631d06); the fine-tuned last two backbone stages.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/damage_v2}
DATA=${CARCHECK_DATA:-../shared/data}
[ -f data/cardd/data.yaml ] || { echo "build CarDD train/valid first (see the header of this script)" >&2; exit 2; }
mkdir -p runs/recipes
[ -f runs/recipes/damaged.csv ] || carcheck dataset recipe damaged --root "$DATA" --out runs/recipes/damaged.csv
[ -f data/negatives_train.json ] || carcheck dataset negatives runs/recipes/damaged.csv --out data/negatives_train.json
# the warm start: the damage model shipped before this run (commit 4631d06), taken from git history
INIT=runs/damage_init_4631d06.safetensors
[ -f "$INIT" ] || git show 4631d06:src/carcheck/models/weights/segmenter_damage_cardd_lite0.safetensors > "$INIT"
RESUME=""; [ -f "$RUN/last.pt" ] && RESUME="--resume"
export OMP_WAIT_POLICY=PASSIVE
exec carcheck train segmentation \
  --task "damage:cardd_damage:data/cardd,$DATA/car_damage/lensor_severity/annotations/instances_train.json,data/negatives_train.json:data/cardd" \
  --out "$RUN" --epochs 6 --max-steps-per-epoch 250 --batch-size 8 --size 512 --load-size 640 --val-size 640 \
  --scale 0.5,1.5 --loss focal+dice --class-weights --lr 0.0005 --channels 96 --threads 2 --unfreeze 2 \
  --init "$INIT" $RESUME
