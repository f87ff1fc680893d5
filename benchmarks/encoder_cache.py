"""Cache pooled per-block Whisper-encoder embeddings of every clip in ``../shared/corpora``.

    python benchmarks/encoder_cache.py --size base      # -> ~/.cache/sercli/whisper-base/chunk-*.npz

Checkpointed per chunk of 256 clips: run it again to resume. Heads are then screened on the
cache (``benchmarks/encoder_heads.py``) in seconds.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from sercli.training.embeddings import cache_embeddings
from sercli.training import default_cache_dir

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT.parent / "shared" / "corpora" / "manifest.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="base")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    manifest = pd.read_csv(MANIFEST)
    paths = [str(MANIFEST.parent / p) for p in manifest["path"]]
    cache_embeddings(paths, size=args.size, out_dir=args.out or default_cache_dir() / f"whisper-{args.size}")


if __name__ == "__main__":
    main()
