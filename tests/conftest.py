"""Shared fixtures: float64 everywhere in tests, small models, reference graphs."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from facet.config import FacetConfig  # noqa: E402


def tiny_config(elements=("O", "Si"), **kw) -> FacetConfig:
    """A small Facet (same architecture, fewer channels) so tests compile fast."""
    base = dict(
        elements=tuple(elements), graph_cutoff=4.0, r_max_init=3.5,
        hidden_irreps="16x0e+8x1o+4x2e", embedding_channels=16, scalar_channels=16,
        scalar_mlp_hidden=16, mixer_channels=8, mixer_heads=2, mixer_hidden=4,
        degree_radii=(0.5, 2.0, 4.0), degree_values=(0.1, 4.0, 20.0), dtype="float64",
    )
    base.update(kw)
    return FacetConfig(**base)


def randomised_params(module, seed=0, layer_scale=0.7):
    """Initial parameters with the zero-initialised layer scales and readout set
    to random values, so every block and the geometry actually matter."""
    from facet import model

    params = model.init(module, jax.random.key(seed))
    rng = np.random.default_rng(seed)

    def perturb(path, x):
        name = jax.tree_util.keystr(path)
        if "layer_scale" in name:
            return x + layer_scale * rng.normal(size=x.shape)
        return x

    params = jax.tree_util.tree_map_with_path(perturb, params)
    return model.cast_params(params, np.float64)


@pytest.fixture(scope="session")
def tiny_model():
    from facet import model

    cfg = tiny_config()
    module = model.build(cfg)
    return cfg, module, randomised_params(module)
