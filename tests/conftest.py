"""Shared fixtures: small models, reference graphs, and each test's precision.

Tests run as production does, in float32, with jax's NaN checks on. A test (or a whole
module, `pytestmark = pytest.mark.float64`) that compares against an independent
reference at 1e-10 asks for float64; one that makes NaNs on purpose is marked
`allow_nans`.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from facet.config import FacetConfig  # noqa: E402


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # Before any fixture of the test is set up, so module fixtures get its precision too.
    jax.config.update("jax_enable_x64", item.get_closest_marker("float64") is not None)
    jax.config.update("jax_debug_nans", item.get_closest_marker("allow_nans") is None)


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
    """(config, module, float64 parameters): for float64 tests only."""
    from facet import model

    cfg = tiny_config()
    module = model.Facet(cfg)
    with jax.enable_x64(True):
        return cfg, module, randomised_params(module)
