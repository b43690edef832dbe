"""SevenNet-0 in JAX, and its streamlined variant (issue #6).

    import facet_sevennet as sevennet
    config, params, info = sevennet.read_checkpoint()      # needs torch (reads the .pth)
    sevennet.save("sevennet0.npz", config, params, info)    # then no torch is needed
    config, params, info = sevennet.load("sevennet0.npz")
    module = sevennet.SevenNet(config)                       # same call as facet.model.Facet

Command line: ``python -m facet_sevennet {convert,streamline,export} ...``
(see ``python -m facet_sevennet --help``).  Only ``read_checkpoint`` imports
torch.
"""

from facet_sevennet.model import (  # noqa: F401
    SevenNet,
    SevenNetConfig,
    count_parameters,
    cutoff,
    init,
    load,
    save,
)


def read_checkpoint(path=None):
    """(config, params, info) of a SevenNet checkpoint; default SevenNet-0 from the sevenn wheel. Needs torch."""
    from facet_sevennet.convert import read_checkpoint as _read

    return _read(path)
