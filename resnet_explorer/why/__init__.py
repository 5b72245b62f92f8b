"""Why shortcuts help: three later papers' experiments on our own nets.

    lesion      delete blocks of a trained net (Veit et al. 2016): a ResNet barely notices one
                missing block, a plain net collapses (`blocks`: what deleting a block means)
    gradients   shattered gradients at initialisation (Balduzzi et al. 2017): how alike the
                input gradients of neighbouring inputs are, plain vs residual, by depth
    landscape   filter-normalised slices of the loss around trained weights (Li et al. 2018)
    figures     their plotly figures; section: the report's "Why shortcuts help"
    sources     where nets (run directories, checkpoints, built models) and images come from

Each study works on a run directory, a checkpoint or a model built with ``build(spec)``,
returns plain data (JSON-ready; errors as fractions) and has a plotly figure beside it.
The images are read once (`eval_set`) and shared by every net and study.

    from resnet_explorer.why import eval_set, lesion, gradients, landscape
    images = eval_set("synthetic-demo")
    lesion("runs/demo/resnet-56", images=images)["mean_rise"]
    gradients(["cifar-plain56", "cifar-resnet56"], width=8)
    landscape("runs/demo/resnet-56", images=images, span=0.5)
"""

from .blocks import Block, Lesioner, block_list, without_branch
from .gradients import by_depth, gradients, gradients_table, shattering, sweep
from .landscape import filter_normalized, landscape, landscape_table
from .lesion import lesion, lesion_table
from .sources import EvalSet, NetSource, eval_set, open_net

__all__ = ["Block", "Lesioner", "block_list", "without_branch", "lesion", "lesion_table", "gradients",
           "shattering", "sweep", "by_depth", "gradients_table", "landscape", "landscape_table",
           "filter_normalized", "EvalSet", "NetSource", "eval_set", "open_net"]
