"""Visible checks of the resnet_basics assignment: one call per question, a message that says what is wrong.

Each ``check_*`` compares the student's code with the library's own implementation
(`resnet_explorer.model`, `count`, `analysis`) on seeded inputs. It prints nothing when
all is right; otherwise it prints one message naming the case and the likely mistake
(``grader.check("q2")`` shows it). They never raise: a crash in the student's code is
reported as a message too.

`FORBIDDEN` is what each question's answer may not call (the library's own answer to it,
or a counter that does the work): the checks refuse such an answer, and the grader
(`integrity`) gives it no points.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .. import model as ref
from ..analysis import layer_responses as ref_layer_responses
from ..count import count
from ..zoo import get_spec
from .integrity import Forbidden, resolve, uses
from .probing import randomize, seeded

_COUNTERS = ["resnet_explorer.count", "torch.utils.flop_counter", "fvcore", "torchinfo", "thop", "ptflops"]
FORBIDDEN: dict[str, list[str]] = {
    "q1": ["resnet_explorer.model.ShortcutA", "resnet_explorer.model.make_shortcut"],
    "q2": ["resnet_explorer.model.BasicBlock", "resnet_explorer.model.ShortcutA", "resnet_explorer.model.make_shortcut"],
    "q3": ["resnet_explorer.model.Bottleneck", "resnet_explorer.model.Projection", "resnet_explorer.model.make_shortcut"],
    "q4": _COUNTERS,
    "q5": _COUNTERS,
    "q6": ["resnet_explorer.analysis.layer_responses", "resnet_explorer.analysis.conv_bn_pairs"],
}
_resolved: dict[str, Forbidden] = {}


class CheckFailed(Exception):
    pass


def _report(check: Callable[[], None]) -> None:
    try:
        check()
    except CheckFailed as e:
        print(f"✗ {e}")
    except Exception as e:  # the student's code crashed
        print(f"✗ your code raised {type(e).__name__}: {e}")


def _fail(msg: str) -> None:
    raise CheckFailed(msg)


def _call(what: str, fn: Callable[[], Any], question: str | None = None) -> Any:
    """``fn()`` (the student's code); fails when it raises or runs what ``question`` may not call."""
    if question not in _resolved:
        _resolved[question] = resolve(FORBIDDEN.get(question, []))
    try:
        result, used = uses(_resolved[question], fn)
    except Exception as e:
        _fail(f"{what} raised {type(e).__name__}: {e}")
    if used:
        _fail(f"{what} calls {', '.join(used)}: the assignment asks for your own code here "
              f"({question} may not use {', '.join(FORBIDDEN[question])})")
    return result


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def check_shortcut_a(ShortcutA: type) -> None:
    """q1: option A: every stride-th pixel, extra channels zero-padded."""
    def run() -> None:
        for cin, cout, stride, size in ((16, 16, 1, 8), (16, 32, 2, 8), (8, 16, 2, 7)):
            x = seeded(size, 2, cin, size, size)
            what = f"ShortcutA({cin}, {cout}, stride={stride}) on a {size}x{size} map"
            got = _call(what, lambda: ShortcutA(cin, cout, stride)(x), "q1")
            want = ref.ShortcutA(cin, cout, stride)(x)
            if not isinstance(got, torch.Tensor):
                _fail(f"{what} returned {type(got).__name__}, not a tensor")
            if got.shape[2:] != want.shape[2:]:
                hint = (" did you subsample by the stride (x[:, :, ::stride, ::stride])?"
                        if got.shape[2] == size and stride > 1 else "")
                _fail(f"{what}: output is {tuple(got.shape[2:])} spatially, expected {tuple(want.shape[2:])}.{hint}")
            if got.shape[1] != cout:
                _fail(f"{what}: output has {got.shape[1]} channels, expected {cout}: "
                      f"append {cout - cin} channels of zeros")
            if not _close(got[:, :cin], want[:, :cin]):
                _fail(f"{what}: the first {cin} channels should be the input's (subsampled), unchanged")
            if not _close(got, want):
                _fail(f"{what}: the extra {cout - cin} channels should be zeros (option A adds no parameters)")
    _report(run)


def _block_variants(block: ref.BasicBlock | ref.Bottleneck, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What common mistakes would output, from the reference block's own F(x) and shortcut."""
    relu = torch.relu
    kept: list[torch.Tensor] = []  # F(x): its last BN's output, copied before the in-place addition
    handle = block.last_bn().register_forward_hook(lambda mod, inp, out: kept.append(out.clone()))
    try:
        block(x)
    finally:
        handle.remove()
    f, s = kept[0], block.shortcut(x)
    return {"the ReLU applied before the addition (relu(F(x)) + x)": relu(f) + s,
            "no ReLU after the addition": f + s,
            "no shortcut added": relu(f)}


@torch.no_grad()
def _check_block(name: str, student: type, cases: list[tuple], make_ref: Callable[..., nn.Module],
                 question: str) -> None:
    for args, cin in cases:
        what = f"{name}{args}"
        mine = _call(what, lambda: student(*args), question)
        want_block = make_ref(*args)
        keys, want_keys = set(mine.state_dict()), set(want_block.state_dict())
        if keys != want_keys:
            missing, extra = sorted(want_keys - keys), sorted(keys - want_keys)
            _fail(f"{what}: parameter names differ from the paper's layout (conv1, bn1, … shortcut): "
                  f"missing {missing[:4]}, unexpected {extra[:4]}")
        mine_state = mine.state_dict()
        for k, v in want_block.state_dict().items():
            if mine_state[k].shape != v.shape:
                _fail(f"{what}: {k} has shape {tuple(mine_state[k].shape)}, expected {tuple(v.shape)}")
        randomize(mine, 1)
        randomize(want_block, 1)
        x = seeded(2, 2, cin, 8, 8)
        got = _call(f"{what} forward", lambda: mine(x.clone()), question)
        want = want_block(x.clone())
        if got.shape != want.shape:
            _fail(f"{what}: output shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        if not _close(got, want):
            for mistake, variant in _block_variants(want_block, x.clone()).items():
                if _close(got, variant):
                    _fail(f"{what}: output differs from relu(F(x) + shortcut(x)); it matches {mistake}")
            _fail(f"{what}: output differs from relu(F(x) + shortcut(x)) (max |difference| "
                  f"{(got - want).abs().max():.3g}); check the order conv → BN → ReLU in F")


def check_basic_block(BasicBlock: type) -> None:
    """q2: y = relu(F(x) + shortcut(x)), F = bn2(conv2(relu(bn1(conv1(x)))))."""
    _report(lambda: _check_block(
        "BasicBlock", BasicBlock, [((16, 16, 1), 16), ((16, 32, 2), 16)],
        lambda cin, cout, stride: ref.BasicBlock(cin, cout, stride, True, "A"), "q2"))


def check_bottleneck(Bottleneck: type) -> None:
    """q3: 1x1 reduce (strided) → 3x3 → 1x1 expand ×4, projection shortcut where the shape changes."""
    _report(lambda: _check_block(
        "Bottleneck", Bottleneck, [((64, 16, 1), 64), ((32, 16, 2), 32)],
        lambda cin, width, stride: ref.Bottleneck(cin, width, stride, True, "B", "1x1"), "q3"))


def check_conv_macs(conv_macs: Callable) -> None:
    """q4: k·k·(C_in/groups)·C_out·H_out·W_out; biases are not counted."""
    def run() -> None:
        for cin, cout, k, s, p, g, bias, size in ((16, 32, 3, 1, 1, 1, False, 10), (3, 64, 7, 2, 3, 1, False, 224),
                                                   (8, 24, 3, 1, 1, 1, True, 12), (96, 256, 5, 1, 2, 2, False, 27)):
            conv = nn.Conv2d(cin, cout, k, s, p, groups=g, bias=bias)
            what = f"conv_macs(nn.Conv2d({cin}, {cout}, {k}, stride={s}, padding={p}, groups={g}, bias={bias}), ({size}, {size}))"
            got = _call(what, lambda: conv_macs(conv, (size, size)), "q4")
            out = (size + 2 * p - k) // s + 1
            want = k * k * (cin // g) * cout * out * out
            if got == want:
                continue
            hint = ""
            if got == want + cout * out * out:
                hint = " You counted the bias: the paper's convention counts the weights' multiply-adds only."
            elif got == 2 * want:
                hint = " You counted 2 FLOPs per multiply-add: the paper counts one."
            elif got == want * g:
                hint = " A grouped conv sees C_in/groups input channels per output."
            elif got == k * k * (cin // g) * cout * size * size:
                hint = f" Use the output size ({out}x{out}), not the input size."
            _fail(f"{what} returned {got!r}, expected {want:,}.{hint}")
    _report(run)


def check_net_macs(net_macs: Callable) -> None:
    """q5: the multiply-adds of every conv and fc layer (biases not), as `resnet_explorer.count`."""
    def run() -> None:
        for name, size in (("cifar-resnet20", 32), ("resnet18", 64)):
            spec = get_spec(name, input_size=size)
            model = ref.build(spec).eval()
            got = _call(f"net_macs(build({name!r}), {size})", lambda: net_macs(model, size), "q5")
            c = count(spec)
            want = c.macs
            if got != want:
                fc = c.row("fc").macs
                hint = " You left out the fc layer." if got == want - fc else ""
                _fail(f"net_macs(build({name!r}), {size}) returned {got!r}, expected {want:,} "
                      f"(count(get_spec({name!r})).macs).{hint}")
    _report(run)


@torch.no_grad()
def check_layer_responses(layer_responses: Callable) -> None:
    """q6: the std of each BN's output, measured in a forward hook, before the ReLU or addition."""
    def run() -> None:
        for name in ("cifar-plain8", "cifar-resnet8"):
            model = randomize(ref.build(name, width=4), 3)
            x = seeded(4, 8, 3, 32, 32)
            got = _call(f"layer_responses({name})", lambda: layer_responses(model, x), "q6")
            want = {r.name: r.std for r in ref_layer_responses(model, x)}
            if not isinstance(got, dict):
                _fail(f"layer_responses should return a dict {{BN module name: std}}, got {type(got).__name__}")
            if set(got) != set(want):
                _fail(f"layer_responses({name}) keys should be the BN module names {sorted(want)[:3]} …; "
                      f"got {sorted(map(str, got))[:3]} …")
            bad = [k for k in want if abs(float(got[k]) - want[k]) > 1e-4 * max(1.0, want[k])]
            if bad:
                k = bad[0]
                hint = (" Your values are smaller: are you measuring after the (in-place) ReLU? "
                        "Compute the std inside the hook, on the BN's output."
                        if all(float(got[b]) < want[b] for b in bad) else "")
                _fail(f"layer_responses({name})[{k!r}] is {float(got[k]):.4g}, expected {want[k]:.4g}.{hint}")
    _report(run)


def check_degradation(results: Any, depths: tuple[int, ...]) -> None:
    """q7: {net name: final training error} for the plain and residual net of each depth."""
    def run() -> None:
        if not isinstance(results, dict):
            _fail(f"results should be a dict {{'cifar-plain8': error, …}}, got {type(results).__name__}")
        want = {f"cifar-{k}{d}" for d in depths for k in ("plain", "resnet")}
        if set(results) != want:
            _fail(f"results keys should be {sorted(want)}, got {sorted(map(str, results))}")
        for k, v in results.items():
            if not isinstance(v, float) or not 0.0 <= v <= 1.0:
                _fail(f"results[{k!r}] = {v!r}: the training error is a float in [0, 1] "
                      "(the train_error of the run's last train line)")
    _report(run)


__all__ = ["FORBIDDEN", "check_shortcut_a", "check_basic_block", "check_bottleneck", "check_conv_macs",
           "check_net_macs", "check_layer_responses", "check_degradation"]
