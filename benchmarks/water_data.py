"""The liquid-water benchmark data: unpack the shipped copy and split it by trajectory.

    python benchmarks/water_data.py [--out benchmarks/out/water]

Reads `benchmarks/water/deepmd-water-400.extxyz.gz` (see `benchmarks/water/README.md`
for where it comes from), writes `all.extxyz` (what `python -m facet.train --data`
reads with `--split-indices benchmarks/water/split.json`) and train/valid/test.extxyz
(for the peers) under --out. The split: data_3 is the test set (DeePMD-kit's own
example tests on it); every 8th frame of data_0..2 is validation; the rest trains.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "water" / "deepmd-water-400.extxyz.gz"
SPLIT = HERE / "water" / "split.json"


def split_indices(frames) -> dict:
    train, valid, test = [], [], []
    for i, atoms in enumerate(frames):
        trajectory = atoms.info["trajectory"]
        if trajectory == "data_3":
            test.append(i)
        elif int(atoms.info["frame"]) % 8 == 0:
            valid.append(i)
        else:
            train.append(i)
    return {"train": train, "valid": valid, "test": test, "n_structures": len(frames)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(HERE / "out" / "water"))
    args = p.parse_args(argv)
    from ase.io import read, write

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = gzip.open(SOURCE, "rt").read()
    (out / "all.extxyz").write_text(text)
    frames = read(out / "all.extxyz", ":")
    split = split_indices(frames)
    if SPLIT.exists():
        stored = json.loads(SPLIT.read_text())
        if stored != split:
            raise SystemExit(f"{SPLIT} does not match the split of {SOURCE}: the data changed?")
    else:
        SPLIT.write_text(json.dumps(split) + "\n")
    for name in ("train", "valid", "test"):
        write(out / f"{name}.extxyz", [frames[i] for i in split[name]], format="extxyz")
    print(json.dumps({k: len(v) for k, v in split.items() if k != "n_structures"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
