#!/usr/bin/env bash
# Every protocol for an encoder model, through `sercli train` and `sercli evaluate`, recorded in
# its card. Usage (from the repository root, train and encoder extras installed):
#
#   benchmarks/encoder_protocols.sh NAME [TRAIN OPTIONS...]
#
# e.g. benchmarks/encoder_protocols.sh whisper-base --arch whisper-base --layers 3 --C 0.0003 --mask-padding
# Trains models/NAME on the `split` train rows of every corpus of ../shared/corpora and
# ../shared/corpora-more (calibrated on val) unless it has a card; evaluates it on the `split` test
# rows; trains one model of the same recipe per held-out corpus (runs/loco/NAME-CORPUS, unless it
# has a card) and evaluates it on every file of that corpus (loco:CORPUS) and on its speaker-skewed
# subset (loco-skewed:CORPUS). Each evaluation runs as annotate does by default (--adapt auto: each
# corpus's own statistics for an encoder model; recorded under the plain protocol key) and without
# adaptation (--adapt none: PROTOCOL+adapt_none). Embeddings are cached (~/.cache/sercli), so the
# LOCO models take seconds each after the first.
set -euo pipefail
name=$1; shift
M="--manifest ../shared/corpora/manifest.csv --manifest ../shared/corpora-more/manifest.csv"
[ -f "models/$name/card.json" ] || sercli train $M --out "models/$name" --jobs 2 "$@"
for adapt in auto none; do
  sercli evaluate --model "models/$name" $M --split test --adapt $adapt --record "models/$name" --jobs 2
done
for hold in crema-d ravdess savee tess nemo emotiontts-ko; do
  out=runs/loco/$name-$hold
  [ -f "$out/card.json" ] || sercli train $M --out "$out" --split-column "loco:$hold" --jobs 2 "$@"
  for protocol in loco loco-skewed; do
    for adapt in auto none; do
      sercli evaluate --model "$out" $M --split test --split-column "$protocol:$hold" --adapt $adapt \
        --record "models/$name" --jobs 2
    done
  done
done
