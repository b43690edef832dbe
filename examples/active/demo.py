"""The `make active-demo` walk-through: a committee learns hot SiO2 by active learning.

    python examples/active/demo.py --out active-demo

1. makes an independent hot test set with the reference potential (Vashishta SiO2 in
   LAMMPS, 3500-5000 K; the bundled training data goes up to 3000 K);
2. trains a 4-member committee on the bundled data (examples/configs/facet-tiny.json);
3. runs `python -m facet.active` at 4000 K for 3 iterations, the Vashishta potential
   labelling the frames the committee is unsure of, and reports the test errors and
   the calibration of the uncertainty after each (report.md, active.png, calibration.png).
Every step is the command a user would type; they are printed as they run.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# `make demo`'s walk-through prints and runs each command the same way: use its helper
_spec = importlib.util.spec_from_file_location("facet_demo", HERE.parent / "demo.py")
_demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_demo)
sh = _demo.sh


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="active-demo")
    p.add_argument("--member-steps", type=int, default=250, help="training steps of each committee member")
    p.add_argument("--iterations", type=int, default=3)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from facet.data import default_dataset_path

    start = time.time()
    py = sys.executable
    hot = out / "hot-test.extxyz"
    if not hot.exists():
        sh(py, HERE.parent / "make_default_dataset.py", "--out", hot, "--seed", "1", "--trajectories", "12",
           "--snapshots", "5", "--temperatures", "3500", "5000")
    sh(py, "-m", "facet.train", "--data", default_dataset_path(), "--out", out / "committee", "--ensemble", "4",
       "--config", HERE.parent / "configs" / "facet-tiny.json", "--max-steps", args.member_steps, "--no-progress",
       "--set", "eval_every=125")  # two validations per member instead of eight
    sh(py, "-m", "facet.active", "--committee", out / "committee", "--data", default_dataset_path(),
       "--out", out / "active", "--temperature", "4000", "--iterations", args.iterations,
       "--trajectories", "4", "--md-steps", "200", "--finetune-steps", "60",
       "--oracle", f"{HERE / 'vashishta.py'}:VashishtaCalculator", "--test", hot)
    print(f"\nActive-learning demo finished in {(time.time() - start) / 60:.1f} min: {out / 'active' / 'report.md'} "
          f"(plots: active.png, calibration.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
