"""Why shortcuts help: three later papers' experiments on our own nets.

    lesion      delete blocks of a trained net (Veit et al. 2016): a ResNet barely notices one
                missing block, a plain net collapses
    gradients   shattered gradients at initialisation (Balduzzi et al. 2017): how alike the
                input gradients of neighbouring inputs are, plain vs residual, by depth
    landscape   filter-normalised slices of the loss around trained weights (Li et al. 2018)

Each works on a run directory, a checkpoint or a model built with ``build(spec)``, returns
plain data (JSON-ready; errors as fractions) and has a plotly figure beside it.
"""

from .blocks import Block, Lesioner, block_list, without_branch
from .lesion import lesion, lesion_table
from .sources import EvalSet, NetSource, eval_set, open_net

__all__ = ["Block", "Lesioner", "block_list", "without_branch", "lesion", "lesion_table", "EvalSet",
           "NetSource", "eval_set", "open_net"]
