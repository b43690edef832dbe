"""The S2 mixer's grid: equivariance error against cost, for several grids.

    python benchmarks/s2_grid.py [--out benchmarks/out/s2_grid.json]

For each grid (quadrature, res_beta x res_alpha) this measures, exactly as the
tests do (tests/test_model.py), in float64:

* the S2-MLP-Mixer's equivariance error alone (random features, 5 random rotations);
* a randomly initialised small Facet's energy error (fraction of the per-atom
  spread) and force error (relative norm) under 3 rotations, with and without
  inversion, on a rattled, sheared two-element cell;

and the time of one Facet-Small-width mixer (energy and gradient) on 512 atoms,
single-threaded. The tests bound the errors at 1 % (mixer), 1 % (energies) and
2 % (forces); a grid is usable when all three hold.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

HERE = Path(__file__).resolve().parent
GRIDS = [("soft", 18, 17), ("soft", 14, 13), ("soft", 12, 11), ("soft", 10, 9), ("soft", 8, 7),
         ("gausslegendre", 12, 11), ("gausslegendre", 10, 9), ("gausslegendre", 8, 9), ("gausslegendre", 6, 7)]
BOUNDS = {"mixer": 0.01, "energy": 0.01, "forces": 0.02}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(HERE / "out" / "s2_grid.json"))
    args = p.parse_args(argv)

    import e3nn_jax as e3nn
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from ase.build import bulk
    from ase.neighborlist import neighbor_list
    from scipy.spatial.transform import Rotation

    from facet import model
    from facet.config import FacetConfig

    atoms = bulk("Si", "diamond", a=5.43) * (2, 1, 1)
    atoms.numbers[::3] = 8
    atoms.set_cell(atoms.cell.array + np.array([[0, 0.3, 0.1], [0.2, 0, 0], [0, 0.4, 0]]), scale_atoms=True)
    atoms.rattle(0.1, seed=0)

    def energy_forces(module, params, cfg, a):
        i, j, S = neighbor_list("ijS", a, cfg.graph_cutoff)
        vec = a.positions[j] - a.positions[i] + S @ a.cell.array
        species = np.array([list(cfg.elements).index(s) for s in a.get_chemical_symbols()], np.int32)
        n = len(a)
        e, g = model.energy_and_edge_gradients(module, params, jnp.asarray(vec), j, i, species, jnp.ones(n))
        forces, _ = model.forces_and_virial(jnp.asarray(vec), j, i, g, n)
        return np.asarray(e), np.asarray(forces)

    rows = []
    for quadrature, rb, ra in GRIDS:
        row = {"quadrature": quadrature, "res_beta": rb, "res_alpha": ra, "points": rb * ra}
        try:
            model.s2_grid_matrices(2, rb, ra, quadrature)
        except Exception as err:  # e3nn rejects grids too coarse for lmax
            row["error"] = str(err).splitlines()[0]
            rows.append(row)
            print(row)
            continue
        row["mixer"] = model.mixer_equivariance_error(rb, ra, quadrature)

        cfg = FacetConfig(elements=("O", "Si"), graph_cutoff=4.0, r_max_init=3.5, hidden_irreps="16x0e+8x1o+4x2e",
                          embedding_channels=16, scalar_channels=16, scalar_mlp_hidden=16, mixer_channels=8,
                          mixer_heads=2, mixer_hidden=4, degree_radii=(0.5, 2.0, 4.0), degree_values=(0.1, 4.0, 20.0),
                          dtype="float64", s2_res_beta=rb, s2_res_alpha=ra, s2_quadrature=quadrature)
        module = model.Facet(cfg)
        params = model.init(module, jax.random.key(0))
        rng = np.random.default_rng(0)
        params = jax.tree_util.tree_map_with_path(  # layer scales as tests/conftest.py randomised_params
            lambda path, v: v + 0.7 * rng.normal(size=v.shape) if "layer_scale" in jax.tree_util.keystr(path) else v,
            params)
        params = model.cast_params(params, np.float64)
        ea0, f0 = energy_forces(module, params, cfg, atoms)
        spread = np.std(ea0)
        worst_e = worst_f = 0.0
        for rot in Rotation.random(3, random_state=1).as_matrix():
            for sign in (1, -1):
                q = sign * rot
                turned = atoms.copy()
                turned.set_cell(atoms.cell.array @ q.T, scale_atoms=False)
                turned.positions = atoms.positions @ q.T
                ea1, f1 = energy_forces(module, params, cfg, turned)
                worst_e = max(worst_e, abs(ea1.sum() - ea0.sum()) / (len(atoms) * spread))
                worst_f = max(worst_f, np.linalg.norm(f1 - f0 @ q.T) / np.linalg.norm(f0))
        row["energy"], row["forces"] = worst_e, worst_f
        row["within_bounds"] = all(row[k] < b for k, b in BOUNDS.items())

        # Cost at Facet-Small width, float32, one thread: the mixer and its gradient.
        big = e3nn.Irreps("128x0e+64x1o+32x2e")
        small = model.S2MLPMixer(big, channels=64, heads=2, hidden=16, lmax=2, res_beta=rb, res_alpha=ra,
                                 quadrature=quadrature)
        h = e3nn.normal(big, jax.random.key(3), (512,), dtype=jnp.float32)
        ps = small.init(jax.random.key(4), h)
        f = jax.jit(jax.value_and_grad(lambda p, h: jnp.sum(small.apply(p, h).array ** 2), argnums=(0, 1)))
        jax.block_until_ready(f(ps, h))
        t0, calls = time.perf_counter(), 0
        while time.perf_counter() - t0 < 1.0:
            jax.block_until_ready(f(ps, h))
            calls += 1
        row["mixer_grad_ms_512_atoms"] = 1e3 * (time.perf_counter() - t0) / calls
        rows.append(row)
        print(json.dumps(row))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    print("\n| quadrature | grid | points | mixer error | energy error | force error | within bounds | "
          "mixer+grad, 512 atoms (ms) |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['quadrature']} | {r['res_beta']}×{r['res_alpha']} | {r['points']} | {r['error']} | | | | |")
            continue
        print(f"| {r['quadrature']} | {r['res_beta']}×{r['res_alpha']} | {r['points']} | {r['mixer']:.2e} | "
              f"{r['energy']:.2e} | {r['forces']:.2e} | {'yes' if r['within_bounds'] else 'no'} | "
              f"{r['mixer_grad_ms_512_atoms']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
