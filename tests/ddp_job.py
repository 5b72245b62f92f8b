"""A small training job for tests/test_distributed.py, run under torchrun: `train()` with
``should_stop`` (which the command line does not offer), on the CPU, quietly.

    torchrun --nproc_per_node=2 tests/ddp_job.py SPEC.json OUT --iters 20 --stop-at 13
"""

from __future__ import annotations

import argparse
from pathlib import Path

from resnet_explorer.recipes import get_recipe
from resnet_explorer.spec import ArchSpec
from resnet_explorer.train import train


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("spec", help="an architecture spec .json file")
    p.add_argument("out", help="the run directory")
    p.add_argument("--data", default="synthetic:256")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--stop-at", type=int, default=None, help="stop (and checkpoint) after this iteration")
    args = p.parse_args()
    spec = ArchSpec.from_json(Path(args.spec).read_text())
    result = train(spec, args.data, get_recipe("test", iters=args.iters), args.out, device="cpu",
                   progress=False, should_stop=lambda it: it == args.stop_at)
    print(f"iteration {result.iteration} finished {result.finished}")


if __name__ == "__main__":
    main()
