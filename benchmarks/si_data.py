"""The pyxtal_ff Si DFT set, filtered and split the same way for Facet and every peer.

    python benchmarks/si_data.py [--out benchmarks/out/si]

Reads `Si.json` from the `pyxtal_ff` package (install it with
`pip install --no-deps pyxtal_ff==0.2.3`; the package imports torch, so the file
is located without importing it), drops structures with energy above -3.0
eV/atom or any force component beyond 20 eV/Å, and splits the rest 10:1:1 by
geometry group with seed 0. The split is stored in `benchmarks/si/split.json`
(indices into the filtered list, in file order); when that file exists it is
used and checked, so every run trains and tests on the same structures.
Writes train/valid/test.extxyz (total energy, forces; eV, Å) for the peers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SPLIT_FILE = HERE / "si" / "split.json"
MAX_ENERGY_PER_ATOM = -3.0
MAX_ABS_FORCE = 20.0
SEED = 0


def si_json_path() -> Path:
    spec = importlib.util.find_spec("pyxtal_ff")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pyxtal_ff is not installed: pip install --no-deps pyxtal_ff==0.2.3 (it ships the Si DFT set)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "Si" / "PyXtal" / "Si.json"
    if not path.exists():
        raise SystemExit(f"{path} is missing from the installed pyxtal_ff; reinstall pyxtal_ff==0.2.3")
    return path


def load_split(json_path: Path | None = None):
    """(train, valid, test) lists of facet.data.Structure, plus a summary dict."""
    from facet import data as fdata

    json_path = json_path or si_json_path()
    structures = fdata.read_structures(json_path, require_forces=True)
    kept, removed = fdata.filter_outliers(structures, max_energy_per_atom=MAX_ENERGY_PER_ATOM,
                                          max_abs_force=MAX_ABS_FORCE)
    if SPLIT_FILE.exists():
        parts = fdata.load_split_indices(SPLIT_FILE, len(kept))
    else:
        parts = fdata.split_indices(kept, (10, 1, 1), seed=SEED)
        SPLIT_FILE.parent.mkdir(parents=True, exist_ok=True)
        fdata.save_split_indices(
            SPLIT_FILE, *parts, n_structures=len(kept), source="pyxtal_ff 0.2.3 datasets/Si/PyXtal/Si.json",
            filter=f"dropped energy/atom > {MAX_ENERGY_PER_ATOM} eV or any |force component| > {MAX_ABS_FORCE} eV/A",
            n_before_filter=len(structures), seed=SEED, ratios=[10, 1, 1])
    split = tuple([kept[i] for i in idx] for idx in parts)
    summary = {"file": str(json_path.name), "structures": len(structures), "kept": len(kept),
               "removed": len(removed), "train": len(split[0]), "valid": len(split[1]), "test": len(split[2])}
    return split, summary


def write_extxyz(structures, path: Path) -> None:
    from ase.io import write

    write(path, [s.to_atoms() for s in structures], format="extxyz")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(HERE / "out" / "si"), help="directory for train/valid/test.extxyz")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    split, summary = load_split()
    for name, part in zip(("train", "valid", "test"), split):
        write_extxyz(part, out / f"{name}.extxyz")
    e = np.array([s.energy / s.n_atoms for s in split[0]])
    summary["train_energy_per_atom_mean"] = float(e.mean())
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
