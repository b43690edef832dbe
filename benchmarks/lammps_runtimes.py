"""pair_style facet's two runtimes side by side: start-up and time per MD step (issue #12).

    python benchmarks/lammps_runtimes.py [--model export/facet-small-si.hlo]
        [--sizes 64,216,512,1000,4096,8000] [--steps 20] [--startup-repeats 3] [--out benchmarks/out]

* Start-up: in a fresh process per measurement (the `lammps` module, facet not imported),
  the wall time from `pair_style facet MODEL runtime R` to the end of `run 1`, after one
  earlier run filled both compilation caches (PJRT's executables, jax's). The median over
  --startup-repeats processes, for R = pjrt and python.
* Step: serial NVE on Si diamond supercells of about each size, the wall time of
  `run N pre no post no` / N, for both runtimes in one process (blocks alternate), and the
  bare execute of the same PJRT executable on the same graph (`facet._pjrt.Model` on the
  pair style's own graph, rebuilt from its neighbour list in its edge order): the floor
  for the PJRT path. Ratios come from blocks run back to back.

Writes lammps_runtimes.md / .json to --out. Absolute times drift on a shared machine;
compare the ratios.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

STARTUP_SCRIPT = r"""
import sys, time
from facet._lammps import new_lammps  # finds and loads the plugin; imports no jax
model, data, runtime = sys.argv[1:4]
lmp = new_lammps()
lmp.commands_string(f"units metal\natom_style atomic\natom_modify map yes\nread_data {data}")
t0 = time.perf_counter()
lmp.commands_string(f"pair_style facet {model} runtime {runtime}\npair_coeff * * Si\nrun 1")
print("STARTUP", time.perf_counter() - t0, "JAX_IMPORTED", "jax" in sys.modules)
lmp.close()
"""


def si_cell(n_target: int):
    from ase.build import bulk

    rep = max(1, round((n_target / 8) ** (1 / 3)))
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * rep
    atoms.rattle(0.03, seed=0)
    return atoms


def write_data(atoms, path: Path) -> Path:
    from ase.io import write

    write(path, atoms, format="lammps-data", masses=True)
    return path


def startup(model: str, data: Path, runtime: str, repeats: int) -> dict:
    times, jax_seen = [], []
    for k in range(repeats + 1):  # the first fills the caches
        out = subprocess.run([sys.executable, "-c", STARTUP_SCRIPT, model, str(data), runtime],
                             capture_output=True, text=True, timeout=900)
        line = [w for w in out.stdout.splitlines() if w.startswith("STARTUP")]
        if out.returncode != 0 or not line:
            raise SystemExit(f"start-up run failed ({runtime}): {out.stdout[-2000:]}{out.stderr[-2000:]}")
        words = line[0].split()
        if k:
            times.append(float(words[1]))
            jax_seen.append(words[3] == "True")
    return {"seconds": statistics.median(times), "all": times, "jax_imported": any(jax_seen)}


def pair_style_graph(lmp, cutoff: float):
    """The graph pair_style facet builds in serial ('graph folded'), edge for edge in its
    order: each centre of the style's neighbour list in list order, its neighbours within
    the cutoff in list order, a ghost neighbour mapped to the owned atom of the same ID
    (cpp/graph_builder.cpp). Edge order changes gather/scatter locality, so the bare execute
    must run this graph, not a re-sorted one, to be the floor of the pair style's step."""
    import numpy as np

    nlocal = lmp.extract_global("nlocal")
    nall = nlocal + lmp.extract_global("nghost")
    x = np.array(lmp.numpy.extract_atom("x", nelem=nall), dtype=np.float64)
    tags = np.array(lmp.numpy.extract_atom("id", nelem=nall))
    local_of_tag = {int(t): k for k, t in enumerate(tags[:nlocal])}
    owner = np.array([local_of_tag[int(t)] for t in tags])
    neighbours = lmp.numpy.get_neighlist(lmp.find_pair_neighlist("facet"))
    vectors, senders, receivers = [], [], []
    for ii in range(len(neighbours)):
        i, js = neighbours.get(ii)
        if i >= nlocal:
            continue
        js = np.asarray(js) & 0x1FFFFFFF  # NEIGHMASK: drop special-bond bits
        d = x[js] - x[i]
        keep = np.einsum("ij,ij->i", d, d) < cutoff * cutoff
        vectors.append(d[keep])
        senders.append(owner[js[keep]])
        receivers.append(np.full(int(keep.sum()), i))
    return (np.concatenate(vectors), np.concatenate(senders).astype(np.int32),
            np.concatenate(receivers).astype(np.int32), np.zeros(nlocal, np.int32), np.ones(nlocal))


def step_times(model: str, sizes, steps: int, blocks: int, log) -> list[dict]:
    from facet import _pjrt
    from facet._lammps import new_lammps

    rows = []
    for n_target in sizes:
        atoms = si_cell(n_target)
        with tempfile.TemporaryDirectory() as tmp:
            data = write_data(atoms, Path(tmp) / "si.data")
            sessions = {}
            for runtime in ("pjrt", "python"):
                lmp = new_lammps()
                lmp.commands_string(f"units metal\natom_style atomic\natom_modify map yes\nread_data {data}\n"
                                    f"pair_style facet {model} runtime {runtime}\npair_coeff * * Si\n"
                                    "neighbor 1.0 bin\nvelocity all create 300 1 mom yes rot yes\n"
                                    "fix nve all nve\ntimestep 0.0005\nthermo 0\nrun 5")
                sessions[runtime] = lmp
            bare = _pjrt.Model(model)
            graph = pair_style_graph(sessions["pjrt"], bare.cutoff)
            bare(*graph)
            timing = {"pjrt": [], "python": [], "bare": []}
            for k in range(blocks):
                order = ["pjrt", "python", "bare"] if k % 2 == 0 else ["bare", "python", "pjrt"]
                for name in order:
                    t = time.perf_counter()
                    if name == "bare":
                        for _ in range(steps):
                            bare(*graph)
                    else:
                        sessions[name].command(f"run {steps} pre no post no")
                    timing[name].append((time.perf_counter() - t) / steps)
            for lmp in sessions.values():
                lmp.close()
        row = {"atoms": len(atoms), "edges": len(graph[1]),
               **{f"{k}_ms": 1e3 * min(v) for k, v in timing.items()},
               "pjrt_over_bare": statistics.median(a / b for a, b in zip(timing["pjrt"], timing["bare"])),
               "pjrt_over_python": statistics.median(a / b for a, b in zip(timing["pjrt"], timing["python"]))}
        rows.append(row)
        log(f"{row['atoms']:6d} atoms: pjrt {row['pjrt_ms']:.2f} ms/step, python {row['python_ms']:.2f}, "
            f"bare execute {row['bare_ms']:.2f}; pjrt/bare {row['pjrt_over_bare']:.3f}, "
            f"pjrt/python {row['pjrt_over_python']:.3f}")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "export" / "facet-small-si.hlo"))
    p.add_argument("--sizes", default="64,216,512,1000,4096,8000")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--startup-repeats", type=int, default=3)
    p.add_argument("--out", default=str(HERE / "out"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(msg, flush=True)

    report = {"model": os.path.relpath(args.model, ROOT), "startup": {}, "steps": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(si_cell(64), Path(tmp) / "si64.data")
        for runtime in ("pjrt", "python"):
            report["startup"][runtime] = startup(args.model, data, runtime, args.startup_repeats)
            log(f"start-up ({runtime}): {report['startup'][runtime]['seconds']:.2f} s")
    report["steps"] = step_times(args.model, [int(x) for x in args.sizes.split(",")], args.steps, args.blocks, log)
    su = report["startup"]
    md = ["# pair_style facet: the PJRT runtime against the embedded-Python one", "",
          f"Model `{report['model']}`. Start-up: from `pair_style` to the end of `run 1` in a fresh process "
          f"with warm compilation caches, median of {args.startup_repeats}: PJRT {su['pjrt']['seconds']:.2f} s, "
          f"Python {su['python']['seconds']:.2f} s (ratio {su['pjrt']['seconds'] / su['python']['seconds']:.2f}; "
          f"jax imported in the PJRT process: {su['pjrt']['jax_imported']}).", "",
          "| atoms | edges | PJRT step (ms) | Python step (ms) | bare PJRT execute (ms) | PJRT / bare | "
          "PJRT / Python |", "|---|---|---|---|---|---|---|"]
    for r in report["steps"]:
        md.append(f"| {r['atoms']} | {r['edges']} | {r['pjrt_ms']:.2f} | {r['python_ms']:.2f} | {r['bare_ms']:.2f} | "
                  f"{r['pjrt_over_bare']:.3f} | {r['pjrt_over_python']:.3f} |")
    (out / "lammps_runtimes.json").write_text(json.dumps(report, indent=1))
    (out / "lammps_runtimes.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
