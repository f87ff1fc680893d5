#!/usr/bin/env bash
# Leave-one-corpus-out (LOCO) screening runs: train a recipe with one corpus held out, then
# evaluate on every file of that corpus. Usage (from the repository root, train extra installed):
#
#   benchmarks/loco.sh ARM HOLDOUT SEED [EPOCHS [ARCH]]
#
# ARM: base (the shipped mfcc-cnn recipe), gen (+ corpus balancing, channel and VTLP
# augmentation), dyn (+ trimming and a 60 dB dynamic-range floor as feature parameters).
# HOLDOUT: crema-d, ravdess, savee (tess has two speakers). ARCH: mfcc-cnn (default), mel-cnn or
# mfcc-crnn. Results: runs/loco/ARM-HOLDOUT-sSEED/ (ARCH-ARM-HOLDOUT-sSEED/ for another ARCH).
set -euo pipefail
arm=$1 hold=$2 seed=$3 epochs=${4:-12} arch=${5:-mfcc-cnn}
M=../shared/corpora/manifest.csv
out=runs/loco/$arm-$hold-s$seed
[ "$arch" = mfcc-cnn ] || out=runs/loco/$arch-$arm-$hold-s$seed
case $arm in
  base) extra=() ;;
  gen) extra=(--corpus-balance --channel-prob 0.5 --vtlp 0.1) ;;
  dyn) extra=(--trim-db 35 --floor-db 60) ;;
  *) echo "unknown arm $arm" >&2; exit 2 ;;
esac
sercli train --manifest $M --arch "$arch" --out "$out" --split-column "loco:$hold" --epochs "$epochs" \
  --patience "$epochs" --seed "$seed" --jobs 2 "${extra[@]}"
sercli evaluate --model "$out" --manifest $M --split test --split-column "loco:$hold" --json "$out/eval.json" --jobs 2
