"""SevenNet models through Facet's export path: the same contract function, header,
model file, ``ModelRunner``, ASE calculator and LAMMPS pair style as a Facet model.

    export_model(config, params, "sevennet.hlo", dtype="float64")
    calc = calculator(config, params)            # in-process FacetCalculator
"""

from __future__ import annotations

from typing import Any, Sequence

from facet import modelfile
from facet.export import DEFAULT_PLATFORMS, export_program, make_header, module_contract_function
from facet_sevennet.model import SevenNet, SevenNetConfig, count_parameters, graph_cutoff
from facet_sevennet.model import cutoff as sevennet_cutoff


def contract_function(config: SevenNetConfig, params, dtype: str | None = None):
    """``fn(edge_vectors, senders, receivers, species, energy_mask) -> (atom_energies, dE_dedge)``
    with the parameters cast to ``dtype`` and closed over.  Returns (fn, cast params, dtype)."""
    dtype = dtype or config.dtype
    fn, cast = module_contract_function(SevenNet(config), params, dtype)
    return fn, cast, dtype


def header(config: SevenNetConfig, params, dtype: str, info: dict[str, Any] | None = None) -> dict[str, Any]:
    return make_header(
        elements=config.elements,
        cutoff=sevennet_cutoff(params, config),
        graph_cutoff=graph_cutoff(config),
        num_layers=config.num_layers,
        dtype=dtype,
        parameter_count=count_parameters(params, trainable_only=False),
        info=info,
        model_config={"architecture": "sevennet-streamlined" if config.streamlined else "sevennet",
                      **config.to_dict()},
    )


def export_model(config: SevenNetConfig, params, path, dtype: str | None = None,
                 platforms: Sequence[str] = DEFAULT_PLATFORMS, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write a Facet model file (``export/README.md``) for a SevenNet model; returns its header."""
    from facet import pjrt_program

    fn, _, dtype = contract_function(config, params, dtype)
    exported = export_program(fn, dtype, platforms)
    # with the PJRT program, so that pair_style facet runs it without Python
    return modelfile.save_model_file(path, exported, header(config, params, dtype, info),
                                     pjrt_program.sections(exported))


def runner(config: SevenNetConfig, params, dtype: str | None = None, info=None, buckets=None):
    """An in-process ``facet.runtime.ModelRunner`` (padding to shape buckets, like a model file)."""
    from facet.runtime import ModelRunner

    fn, _, dtype = contract_function(config, params, dtype)
    return ModelRunner((header(config, params, dtype, info), fn), buckets=buckets)


def calculator(config: SevenNetConfig, params, dtype: str | None = None, info=None, **kwargs):
    """An ASE ``FacetCalculator`` running the model in process."""
    from facet.calculator import FacetCalculator

    return FacetCalculator(runner(config, params, dtype, info, kwargs.pop("buckets", None)), **kwargs)
