"""Lesion study (Veit, Wilber, Belongie 2016, "Residual networks behave like ensembles of
relatively shallow networks"): delete blocks of a trained net and measure its error.

Veit et al. found that deleting one block of a trained ResNet barely changes its test
error, while deleting a layer of a plain net (VGG) destroys it, and that a ResNet's error
grows smoothly with the number of blocks deleted at random: its paths behave like an
ensemble of shallower nets. `lesion` measures both views on any net: each single block
deleted (see `blocks` for what deleting means), and a few random draws of k blocks for
several k.
"""

from __future__ import annotations

import time
from typing import Iterable, Sequence

import torch

from ..errors import UsageError
from .blocks import Lesioner, block_list, pick_blocks
from .sources import EvalSet, NetLike, NetSource, check_fits, data_for, eval_set, open_net

DRAWS = 3  # random draws per number of deleted blocks
COUNTS = (1, 2, 3, 4, 6, 8, 10, 12)  # numbers of blocks deleted at random (up to the deletable blocks)
CHUNK = 500  # images per forward pass (every lesion of one chunk shares its intact prefix)


def random_lesions(names: Sequence[str], counts: Iterable[int], draws: int, seed: int) -> list[tuple[int, list[str]]]:
    """``draws`` sets of k distinct blocks for each k in ``counts`` (at most len(names)),
    drawn with a generator of ``seed``: the same sets on every call."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in counts:
        if not 1 <= k <= len(names):
            continue
        for _ in range(draws):
            pick = torch.randperm(len(names), generator=g)[:k].sort().values.tolist()
            out.append((k, [names[i] for i in pick]))
    return out


def _wrong(lesioner: Lesioner, deleted: Sequence[str], y: torch.Tensor) -> int:
    return int((lesioner.logits(deleted).argmax(1) != y).sum())


def _count_errors(source: NetSource, x: torch.Tensor, y: torch.Tensor, lesions: Sequence[Sequence[str]]) -> list[float]:
    """The error of each lesion (a list of deleted blocks; [] is the intact net) on x, y."""
    wrong = [0] * len(lesions)
    for lo in range(0, len(y), CHUNK):
        lesioner = Lesioner(source.model, x[lo:lo + CHUNK])
        for i, deleted in enumerate(lesions):
            wrong[i] += _wrong(lesioner, deleted, y[lo:lo + CHUNK])
    return [w / len(y) for w in wrong]


def _check(draws: int, counts: Sequence[int] | None) -> None:
    if not isinstance(draws, int) or isinstance(draws, bool) or draws < 0:
        raise UsageError(f"draws {draws!r} is invalid: give 0 (no random deletions) or more")
    if counts is not None and any(not isinstance(k, int) or k < 1 for k in counts):
        raise UsageError(f"counts {list(counts)} is invalid: give numbers of blocks >= 1, e.g. 1,2,4,8")


def lesion(net: NetLike | NetSource, data: str | None = None, images: EvalSet | None = None,
           blocks: Sequence[str] | None = None, counts: Sequence[int] | None = None, draws: int = DRAWS,
           seed: int = 0, singles: bool = True, test: bool = True) -> dict:
    """Delete each block of ``net`` alone (``blocks``: only those), then ``draws`` random
    sets of k blocks for each k in ``counts`` (default `COUNTS`), and measure the error on
    ``images`` (an `EvalSet`; else read from ``data`` or the run's own data). ``singles``
    False: the random draws only (``deleted`` empty); ``test`` False: no test errors (None).

    Returns plain data: ``base_error`` and ``base_test_error`` (the intact net), ``deleted``
    ([{block, error, test_error, rise, position}], errors as fractions, position the
    block's place in the net from 0 to 1), ``not_deletable`` (plain
    blocks that change shape, and why), ``mean_rise`` (over ``deleted``), ``random``
    ([{count, errors, mean}], on the training images only) and ``seconds``."""
    _check(draws, counts)
    t0 = time.perf_counter()
    source = net if isinstance(net, NetSource) else open_net(net)
    if images is None:
        images = eval_set(data_for([source], data), val_split=source.val_split, seed=source.seed)
    check_fits(source, images)
    picked = pick_blocks(source.model, blocks, source.name)
    names = [b.name for b in picked]
    draws_at = random_lesions(names, COUNTS if counts is None else counts, draws, seed)
    intact_and_each = [[]] + ([[n] for n in names] if singles else [])
    train = _count_errors(source, images.train_x, images.train_y, intact_and_each + [d for _, d in draws_at])
    if test:
        tests = _count_errors(source, images.test_x, images.test_y, intact_and_each)
    else:
        tests = [None] * len(intact_and_each)
    base, base_test = train[0], tests[0]
    every = [b.name for b in block_list(source.model)]
    deleted = [{"block": n, "error": e, "test_error": t, "rise": e - base,
                "position": (every.index(n) + 0.5) / len(every)}
               for n, e, t in zip(names, train[1:], tests[1:])]  # empty without ``singles``
    random: dict[int, list[float]] = {}
    for (k, _), e in zip(draws_at, train[len(intact_and_each):]):
        random.setdefault(k, []).append(e)
    spec = source.spec
    return {
        "net": source.name, "arch": spec.name, "depth": spec.depth, "residual": spec.residual,
        "data": images.data, "measure": images.describe(test),
        "images": {"train": len(images.train_y), "test": len(images.test_y) if test else 0},
        "base_error": base, "base_test_error": base_test,
        "deleted": deleted,
        "not_deletable": [{"block": b.name, "why": b.why_not()} for b in block_list(source.model)
                          if not b.deletable and blocks is None],
        "mean_error": _mean([d["error"] for d in deleted]),
        "mean_rise": _mean([d["rise"] for d in deleted]),
        "mean_test_rise": _mean([d["test_error"] - base_test for d in deleted]) if test else None,
        "max_error": max((d["error"] for d in deleted), default=None),
        "random": [{"count": k, "errors": es, "mean": _mean(es)} for k, es in random.items()],
        "seconds": time.perf_counter() - t0,
    }


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def lesion_table(result: dict) -> str:
    """A terminal table of one lesion: the intact net, each block deleted, the random draws."""
    pct = lambda e: "     -" if e is None else f"{100 * e:6.2f}"  # noqa: E731
    lines = [f"{result['net']} ({result['arch']}): {result['measure']}",
             f"  intact          train error {pct(result['base_error'])} %   test error {pct(result['base_test_error'])} %"]
    for d in result["deleted"]:
        lines.append(f"  - {d['block']:<12}  train error {pct(d['error'])} %   test error {pct(d['test_error'])} %"
                     f"   rise {100 * d['rise']:+6.2f}")
    for d in result["not_deletable"]:
        lines.append(f"  x {d['block']:<12}  not deleted: {d['why']}")
    if result["mean_rise"] is not None:
        lines.append(f"  one block deleted: mean train error {pct(result['mean_error'])} % (rise "
                     f"{100 * result['mean_rise']:+.2f} points), worst {pct(result['max_error'])} %")
    for r in result["random"]:
        errs = ", ".join(f"{100 * e:.1f}" for e in r["errors"])
        lines.append(f"  {r['count']:>2} deleted at random: mean train error {pct(r['mean'])} %  ({errs})")
    return "\n".join(lines)
