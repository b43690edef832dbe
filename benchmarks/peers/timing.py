"""Wall-clock cost of one model per energy+forces+stress call, or per relaxation step.

    taskset -c 1 .venv-peers/bin/python benchmarks/peers/timing.py --model sevennet-0 \
        --structures benchmarks/out/peers/structures/si_64.extxyz --mode calls --repeats 5 \
        --threads 1 --out benchmarks/out/peers/timing_sevennet-0_si64.json
    taskset -c 1 .venv-mace/bin/python benchmarks/peers/timing.py --model mace-mp-small-arch ...
    ... --model facet --model-path export/facet-small-si.hlo --mode relax \
        --structures benchmarks/out/peers/structures/relax.extxyz

(``python benchmarks/peers/structures.py`` writes the structure files.)

Modes
-----
``calls``: per structure, ``--warmup`` calls (default 2; the first includes any
compilation and is recorded as ``first_call_s``), then ``--repeats`` timed calls of
``get_potential_energy``, ``get_forces`` and ``get_stress`` (more, until they add up to
``--min-seconds``).  Before every call the
positions are reset to the structure plus fresh Gaussian noise of 1e-3 A, so no
calculator can return a cached result.  Reports median, min and mean wall time,
and the median process CPU time (``median_cpu_s``): with one thread on a busy
host it estimates the uncontended wall time better than the wall time does.

``relax``: per structure, ``--steps`` (default 100) steps of ``ase.optimize.FIRE``
(positions only, fixed cell; run for the full count, whatever the forces).  The
first step includes compilation and warm-up and is recorded separately
(``first_step_s``); the median and min over the remaining steps are reported.
Models whose compiled shapes depend on the neighbour count (Facet, Nequix) may
compile again during a relaxation; such steps stay in the statistics (the median
is insensitive to a few of them) and are counted in ``n_slow_steps`` (steps
longer than 5x the median) with their total time in ``slow_steps_s``.

Threads: ``--threads T`` sets OMP/MKL/OpenBLAS variables and, for JAX,
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` (T = 1;
for T > 1 XLA sizes its pool from the CPUs it may use) before anything heavy is imported, and
``torch.set_num_threads(T)``.  ``--cpus 1`` pins the process (as ``taskset -c 1``).

Skips (recorded with the reason, never a crash): elements the model does not
know; a predicted peak memory above ``--max-memory-gb`` (default 12) or above the
memory available (extrapolated linearly in the number of edges from the two largest
structures done so far; the first structure always runs); a predicted first call
longer than ``--time-limit``; and any structure that actually exceeds
``--time-limit`` seconds (default 900, enforced with SIGALRM; measurements already
taken are kept and flagged).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calculators  # noqa: E402  (stdlib only at import)

NOISE_A = 1e-3


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, choices=list(calculators.MODELS))
    ap.add_argument("--model-path", help="model file for mace / sevennet / nequix / facet")
    ap.add_argument("--dtype", help="model dtype where selectable (mace: float32 | float64)")
    ap.add_argument("--structures", required=True, nargs="+", help="extxyz file(s); every frame is timed")
    ap.add_argument("--only", nargs="+", help="time only frames with these info['name'] values")
    ap.add_argument("--mode", choices=("calls", "relax"), default="calls")
    ap.add_argument("--min-seconds", type=float, default=3.0,
                    help=f"calls mode: keep timing calls until they add up to this (at most {MAX_CALLS} calls)")
    ap.add_argument("--repeats", type=int, help="timed calls (calls: default 5) or relaxations (relax: default 1)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls before timing (calls mode)")
    ap.add_argument("--steps", type=int, default=100, help="FIRE steps per relaxation (relax mode)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cpus", help="pin this process to these CPUs, e.g. '1' or '0,1'")
    ap.add_argument("--time-limit", type=float, default=900.0, help="seconds per structure")
    ap.add_argument("--max-memory-gb", type=float, default=12.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="JSON output (default: benchmarks/out/peers/timing_<model>_<mode>.json)")
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 5 if args.mode == "calls" else 1
    return args


# ----------------------------------------------------------------------------
# system probes


def rss_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss_bytes() -> int:
    """Peak resident memory since the last ``reset_peak_rss`` (VmHWM), else since start."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def mem_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def predict_peak(points, n_edges: int) -> float:
    """Peak resident memory for ``n_edges``: linear through the two largest structures
    done (fixed overheads do not scale), else proportional to the one done (conservative)."""
    pts = sorted(points)
    e1, m1 = pts[-1]
    if len(pts) >= 2:
        e0, m0 = pts[-2]
        if e1 > e0 and m1 > m0:
            return m1 + (m1 - m0) / (e1 - e0) * max(n_edges - e1, 0)
    return m1 / max(e1, 1) * n_edges


class TimeLimit(Exception):
    pass


def _alarm(signum, frame):
    raise TimeLimit()


# ----------------------------------------------------------------------------
# measurements


def count_edges(atoms, cutoff: float) -> int:
    from ase.neighborlist import neighbor_list

    return int(len(neighbor_list("i", atoms, cutoff)))


def one_call(atoms):
    """(wall seconds, process CPU seconds) of one energy+forces+stress evaluation."""
    c = time.process_time()
    t = time.perf_counter()
    atoms.get_potential_energy()
    atoms.get_forces()
    atoms.get_stress()
    return time.perf_counter() - t, time.process_time() - c


def stats(times):
    import numpy as np

    if not times:
        return {}
    a = np.asarray(times)
    return {"median_s": float(np.median(a)), "min_s": float(a.min()), "mean_s": float(a.mean()),
            "max_s": float(a.max()), "n": int(a.size)}


MAX_CALLS = 200


def time_calls(calc, atoms0, args, rng, deadline, rec):
    atoms = atoms0.copy()
    atoms.calc = calc
    base = atoms0.positions.copy()
    warm, timed, cpu = [], [], []
    rec["warmup_s"] = warm
    rec["times_s"] = timed
    rec["cpu_times_s"] = cpu
    k = 0
    # at least --repeats timed calls, and more until they add up to --min-seconds: a 50 ms
    # call timed five times is at the mercy of the machine's load
    while k < args.warmup + args.repeats or (sum(timed) < args.min_seconds and len(timed) < MAX_CALLS):
        # stop early (soft limit) when the next call would end past the deadline
        last = (timed or warm or [0.0])[-1]
        if k > 0 and time.monotonic() + last > deadline:
            rec["time_limited"] = True
            break
        atoms.positions = base + rng.normal(scale=NOISE_A, size=base.shape)
        dt, dc = one_call(atoms)
        (warm if k < args.warmup else timed).append(dt)
        if k >= args.warmup:
            cpu.append(dc)
        k += 1
    if warm:
        rec["first_call_s"] = warm[0]
    if timed:
        rec.update(stats(timed))
        rec["ms_per_atom"] = 1e3 * rec["median_s"] / len(atoms0)
        rec["median_cpu_s"] = stats(cpu)["median_s"]
    elif warm:  # time limit hit during warm-up: the last warm-up call is the best estimate
        rec["estimate_from_warmup_s"] = warm[-1]


def time_relax(calc, atoms0, args, rng, deadline, rec):
    import numpy as np
    from ase.optimize import FIRE

    first, steps, cpu = [], [], []
    rec["relaxations"] = []
    for _ in range(args.repeats):
        atoms = atoms0.copy()
        atoms.calc = calc
        opt = FIRE(atoms, logfile=None)
        e0 = None
        per = []
        for k in range(args.steps):
            if time.monotonic() > deadline:
                rec["time_limited"] = True
                break
            c = time.process_time()
            t = time.perf_counter()
            if k == 0:  # the initial evaluation (with any compilation) belongs to step 0
                e0 = float(atoms.get_potential_energy())
            opt.step()
            dt = time.perf_counter() - t
            (first if k == 0 else steps).append(dt)
            if k > 0:
                cpu.append(time.process_time() - c)
            per.append(dt)
        f = atoms.get_forces()
        rec["relaxations"].append({
            "steps": len(per), "energy_start_eV": e0, "energy_end_eV": float(atoms.get_potential_energy()),
            "fmax_end_eV_A": float(np.sqrt((f ** 2).sum(axis=1)).max()), "seconds": float(sum(per)),
        })
        if rec.get("time_limited"):
            break
    if first:
        rec["first_step_s"] = first[0]
    if steps:
        s = stats(steps)
        rec.update({"median_step_s": s["median_s"], "min_step_s": s["min_s"], "mean_step_s": s["mean_s"],
                    "max_step_s": s["max_s"], "n_steps_timed": s["n"],
                    "median_step_cpu_s": stats(cpu)["median_s"],
                    # steps > 5x the median: recompilations (new shape buckets) or hiccups
                    "n_slow_steps": int(sum(x > 5 * s["median_s"] for x in steps)),
                    "slow_steps_s": float(sum(x for x in steps if x > 5 * s["median_s"]))})
        rec["ms_per_atom_step"] = 1e3 * s["median_s"] / len(atoms0)


def main(argv=None):
    args = parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    thread_env = calculators.set_thread_env(args.threads)
    load_start = loadavg()

    import numpy as np
    from ase.io import read

    stem = "_".join(Path(s).stem for s in args.structures)
    out_path = (Path(args.out) if args.out else
                calculators.REPO / "benchmarks/out/peers" / f"timing_{args.model}_{args.mode}_{stem}.json")

    t = time.perf_counter()
    try:
        calc = calculators.make_calculator(args.model, args.model_path, args.dtype, threads=args.threads)
    except calculators.ModelUnavailable as exc:
        raise SystemExit(f"timing.py: {exc}") from None
    load_s = time.perf_counter() - t
    calculators.set_torch_threads(args.threads)
    info = calculators.describe(args.model, calc=calc)

    frames = []
    for path in args.structures:
        for k, atoms in enumerate(read(path, index=":", format="extxyz")):
            atoms.calc = None
            atoms.info.setdefault("name", f"{Path(path).stem}[{k}]")
            if args.only and atoms.info["name"] not in args.only:
                continue
            frames.append(atoms)
    frames.sort(key=len)

    rng = np.random.default_rng(args.seed)
    cutoff = float(info.get("cutoff") or 6.0)
    memory_points = []       # (edges, peak resident memory in bytes) of structures done
    per_edge_seconds = None  # first call / edges, same structure
    results = []
    signal.signal(signal.SIGALRM, _alarm)
    for atoms in frames:
        name = atoms.info["name"]
        rec = {"name": name, "formula": atoms.get_chemical_formula(), "n_atoms": len(atoms)}
        results.append(rec)
        bad = calculators.unsupported_elements(calc, atoms)
        if bad:
            rec["skipped"] = f"element(s) {', '.join(bad)} not in the model"
            print(f"{name}: skipped ({rec['skipped']})", file=sys.stderr)
            continue
        n_edges = count_edges(atoms, cutoff)
        rec["n_edges"] = n_edges
        rec["edges_cutoff_A"] = cutoff
        avail = mem_available_bytes()
        limit = args.max_memory_gb * 2 ** 30
        if avail is not None:
            limit = min(limit, rss_bytes() + 0.9 * avail)
        if memory_points:
            predicted = max(rss_bytes(), predict_peak(memory_points, n_edges))
            rec["predicted_peak_gb"] = round(predicted / 2 ** 30, 2)
            if predicted > limit:
                rec["skipped"] = (f"predicted peak memory {predicted / 2 ** 30:.1f} GB exceeds the limit "
                                  f"{limit / 2 ** 30:.1f} GB (OOM risk)")
                print(f"{name}: skipped ({rec['skipped']})", file=sys.stderr)
                continue
        if per_edge_seconds is not None and per_edge_seconds * n_edges > args.time_limit:
            rec["skipped"] = (f"predicted call time {per_edge_seconds * n_edges:.0f} s exceeds "
                              f"--time-limit {args.time_limit:.0f} s")
            print(f"{name}: skipped ({rec['skipped']})", file=sys.stderr)
            continue

        rec["loadavg_before"] = loadavg()
        start_rss = rss_bytes()
        peak_is_per_structure = reset_peak_rss()
        deadline = time.monotonic() + args.time_limit
        signal.setitimer(signal.ITIMER_REAL, args.time_limit)
        t0 = time.perf_counter()
        try:
            if args.mode == "calls":
                time_calls(calc, atoms, args, rng, deadline, rec)
            else:
                time_relax(calc, atoms, args, rng, deadline, rec)
        except TimeLimit:
            rec["time_limited"] = True
            rec["note"] = f"hard time limit {args.time_limit:.0f} s hit inside a call"
        except MemoryError:
            rec["skipped"] = "MemoryError"
        except Exception as exc:  # a model failing on one structure must not end the run
            rec["skipped"] = f"error: {type(exc).__name__}: {str(exc)[:300]}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        rec["seconds_total"] = time.perf_counter() - t0
        rec["loadavg_after"] = loadavg()
        peak = peak_rss_bytes()
        rec["peak_rss_gb"] = round(peak / 2 ** 30, 3)
        rec["rss_start_gb"] = round(start_rss / 2 ** 30, 3)
        if n_edges > 0 and "skipped" not in rec:
            if peak_is_per_structure or not memory_points:
                memory_points.append((n_edges, peak))
            first = rec.get("first_call_s", rec.get("first_step_s"))
            if first:
                per_edge_seconds = first / n_edges
        if args.mode == "calls" and "median_s" in rec:
            msg = (f"median {rec['median_s'] * 1e3:.1f} ms (CPU {rec['median_cpu_s'] * 1e3:.1f} ms), "
                   f"min {rec['min_s'] * 1e3:.1f} ms, first {rec['first_call_s']:.2f} s")
        elif "median_step_s" in rec:
            msg = (f"median step {rec['median_step_s'] * 1e3:.1f} ms (CPU {rec['median_step_cpu_s'] * 1e3:.1f} ms), "
                   f"first {rec['first_step_s']:.2f} s")
        else:
            msg = rec.get("skipped") or rec.get("note") or "no timed calls"
        flag = " (time-limited)" if rec.get("time_limited") else ""
        print(f"{args.model} {name} ({len(atoms)} atoms, {n_edges} edges): {msg}{flag}", file=sys.stderr, flush=True)

    if args.model == "facet":
        runner = calc.runner
        info["compilations"] = runner.num_compilations
        info["compile_seconds"] = round(runner.compile_seconds, 2)
        info["shapes"] = [list(s) for s in runner.shapes_seen]
    result = {
        "model": info,
        "mode": args.mode,
        "settings": {k: v for k, v in vars(args).items() if k not in ("model", "model_path")},
        "model_load_s": load_s,
        "threads": args.threads,
        "thread_env": thread_env,
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "versions": calculators.versions(),
        "structures": results,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
