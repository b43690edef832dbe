"""The `make demo` walk-through: train, export, run MD in ASE and LAMMPS.

    python examples/demo.py --out demo [--minutes 3]

1. trains a small Facet model (examples/configs/facet-tiny.json) on the bundled
   SiO2 data for a few minutes and prints validation/test errors;
2. exports it to demo/model.hlo (float32) and demo/model-f64.hlo (float64);
3. runs a short NVT MD with the ASE calculator (demo/ase_md.traj, ase_md.png);
4. runs the same model in LAMMPS (pair_style facet) and prints LAMMPS vs ASE
   agreement on energy, forces and stress.
Every step is the command a user would type; they are printed as they run.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def sh(*cmd) -> None:
    print(f"\n$ {shlex.join(map(str, cmd))}", flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo")
    p.add_argument("--minutes", type=float, default=3.0, help="training wall time")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from facet.data import default_dataset_path

    py = sys.executable
    sh(py, "-m", "facet.train", "--data", default_dataset_path(), "--out", out / "run",
       "--config", HERE / "configs" / "facet-tiny.json", "--max-time", args.minutes)
    ckpt = out / "run" / "checkpoints" / "best.ckpt"
    sh(py, "-m", "facet.export", ckpt, "-o", out / "model.hlo")
    sh(py, "-m", "facet.export", ckpt, "-o", out / "model-f64.hlo", "--dtype", "float64")
    sh(py, "-m", "facet.export", "inspect", out / "model.hlo")
    sh(py, HERE / "ase_md.py", "--model", out / "model.hlo", "--structure", default_dataset_path(),
       "--steps", "200", "--out", out / "ase_md")
    sh(py, HERE / "lammps" / "compare_with_ase.py", "--model", out / "model-f64.hlo", "--md-steps", "100")
    print(f"\nDemo finished: outputs in {out}/ (training curves: {out}/run/training_curves.png, "
          f"parity: {out}/run/parity.png, MD: {out}/ase_md.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
