"""How fast the architecture builder reacts: recount and redraw of a big net per change.

    python benchmarks/builder_speed.py [--arch resnet152] [--repeat 20]

Goal: every change recounts through the analytic counter and redraws the
numbers and the diagram in well under 100 ms for ResNet-152. Prints one table: the
median and worst time of the analytic count alone, of a stage edit typed into the
widget (conv4_x's block count: recount + diagram + tables), and of loading the preset.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable


def timed(fn: Callable[[int], object], repeat: int) -> list[float]:
    times = []
    for i in range(repeat):
        t = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t) * 1e3)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet152")
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args(argv)

    from resnet_explorer import count, get_spec
    from resnet_explorer.widgets import ArchitectureBuilder

    spec = get_spec(args.arch)
    builder = ArchitectureBuilder(args.arch)
    stage = max(builder.stage_controls, key=lambda n: builder.stage_controls[n].blocks.value)
    field = builder.stage_controls[stage].blocks
    n0 = field.value
    rows = {
        "analytic count": timed(lambda i: count(spec), args.repeat),
        f"edit {stage} blocks": timed(lambda i: setattr(field, "value", n0 + 1 + i % 2), args.repeat),
        "load preset": timed(lambda i: builder.set_preset(args.arch if i % 2 else "cifar-resnet20"), args.repeat),
    }
    builder.set_preset(args.arch)
    ok = builder.count.params == count(spec).params
    print(f"{'arch':<12}{'action':<22}{'median ms':>11}{'max ms':>9}{'goal':>22}")
    for action, times in rows.items():
        med = statistics.median(times)
        print(f"{args.arch:<12}{action:<22}{med:>11.1f}{max(times):>9.1f}"
              f"{'< 100 ms: ' + ('met' if med < 100 else 'MISSED'):>22}")
    print(f"params shown {builder.count.params:,} = count(spec): {ok}  (median of {args.repeat} runs)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
