#!/usr/bin/env bash
# Issue 26 item 2: the backbone by measurement, equal short budgets (frozen backbone, 2 x 150 steps), CarDD valid.
cd "$(dirname "$0")/../.."  # the repository root; run with the venv active
export OMP_WAIT_POLICY=PASSIVE
for bb in lite0 lite2; do
  [ -f runs/bb_${bb}_300/best.safetensors ] && continue
  nice -n 5 carcheck train segmentation --task damage:cardd_damage:data/cardd:data/cardd --out runs/bb_${bb}_300 \
    --epochs 2 --max-steps-per-epoch 150 --batch-size 8 --size 512 --load-size 640 --val-size 640 --scale 0.5,1.5 \
    --loss focal+dice --class-weights --lr 0.002 --channels 96 --threads 2 --backbone $bb
done
