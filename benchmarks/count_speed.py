"""Analytic counting vs fvcore tracing: same numbers, how much faster.

    python benchmarks/count_speed.py [--arch resnet152] [--repeat 20]

Goal: the analytic count of ResNet-152 in <= 20 ms and >= 30x faster than
fvcore, so a widget can recount on every click. Prints one table.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet152")
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args(argv)

    from fvcore.nn import FlopCountAnalysis

    from resnet_explorer import build, count, get_spec

    def analytic() -> int:
        return count(get_spec(args.arch)).macs  # spec construction included, as in a widget

    ours_times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        ours = analytic()
        ours_times.append(time.perf_counter() - t)

    spec = get_spec(args.arch)
    model = build(spec).eval()
    x = torch.randn(1, 3, spec.input_size, spec.input_size)
    fv_times = []
    for _ in range(max(1, args.repeat // 10)):
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fa = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            fv = sum(v for k, v in fa.by_operator().items() if k in ("conv", "linear", "addmm"))
        fv_times.append(time.perf_counter() - t)

    o, f = statistics.median(ours_times) * 1e3, statistics.median(fv_times) * 1e3
    print(f"{'arch':<12}{'analytic ms':>13}{'fvcore ms':>11}{'speed-up':>10}{'same MACs':>11}{'goal':>26}")
    print(f"{args.arch:<12}{o:>13.2f}{f:>11.1f}{f / o:>9.0f}x{str(ours == fv):>11}"
          f"{'<=20 ms, >=30x: ' + ('met' if o <= 20 and f / o >= 30 else 'MISSED'):>26}")
    print(f"MACs: analytic {ours:,}  fvcore {fv:,}  (median of {args.repeat} / {len(fv_times)} runs)")
    return 0 if ours == fv else 1


if __name__ == "__main__":
    raise SystemExit(main())
