"""The report's section "Why shortcuts help": the three analyses on an experiment's trained
nets, each with one sentence a student can read.

`why_results` runs them (the images read once for all nets, settings small enough to add
well under a minute to the CPU demo); `why_sentences` says what the numbers show, and
whether that agrees with the paper that proposed the experiment; `why_section_html` is
what `report.write_report` puts on the page.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Sequence

from ..errors import UserError
from .figures import gradients_figure, landscape_figure, lesion_figure, rise_figure
from .gradients import gradients
from .landscape import landscape
from .lesion import lesion
from .sources import has_checkpoint, open_nets

# The report's settings: the CLI's defaults, lighter where the demo's time budget needs it
# (training error only, as the rest of the report's orderings; two random draws per k; the
# landscape's 1-D slices are its surface's axes).
LESION_DRAWS, LESION_COUNTS = 2, (1, 2, 4, 8)
LANDSCAPE = dict(span=0.5, grid=9, directions=2, n_images=250)
GRADIENT_SEEDS = 3


def _label(r: dict) -> str:
    return f"{'ResNet' if r['residual'] else 'plain'}-{r['depth']}"


def _pick(results: Sequence[dict], residual: bool, deepest: bool) -> dict | None:
    have = [r for r in results if r["residual"] == residual]
    return (max if deepest else min)(have, key=lambda r: r["depth"]) if have else None


def why_results(run_dirs: Sequence[str | Path], data: str | None = None) -> dict:
    """Lesions of every trained run, the gradient correlation of their architectures at
    initialisation, and landscapes of the deepest plain net and the residual net of its
    depth. Runs without a checkpoint are left out (``skipped``)."""
    trained = [Path(d) for d in run_dirs if has_checkpoint(d)]
    out: dict = {"skipped": [Path(d).name for d in run_dirs if not has_checkpoint(d)],
                 "lesion": [], "gradients": [], "landscape": []}
    if not trained:
        return out
    nets, images = open_nets(trained, data)
    out["data"] = images.data
    out["lesion"] = [lesion(n, images=images, counts=LESION_COUNTS, draws=LESION_DRAWS, test=False) for n in nets]
    specs = list({n.spec.to_json(): n.spec for n in nets}.values())
    out["gradients"] = gradients(specs, seeds=GRADIENT_SEEDS, input_size=images.side)
    plain = [n for n in nets if not n.spec.residual]
    if plain:
        deep = max(plain, key=lambda n: n.spec.depth)
        twin = next((n for n in nets if n.spec.residual and n.spec.depth == deep.spec.depth), None)
        out["landscape"] = [landscape(n, images=images, **LANDSCAPE) for n in (deep, twin) if n is not None]
    return out


def lesion_sentence(results: Sequence[dict]) -> str | None:
    """Deleting one block: the deepest ResNet against the shallowest plain net."""
    res, plain = _pick(results, True, True), _pick(results, False, False)
    if res is None or plain is None or res["mean_rise"] is None or plain["mean_rise"] is None:
        return None
    ratio = res["mean_rise"] / plain["mean_rise"] if plain["mean_rise"] > 0 else math.inf
    verdict = ("so a residual net is not one chain that breaks when a link is missing: it behaves like an "
               "ensemble of shallower paths, as Veit et al. (2016) found") if ratio < 1 / 3 else (
               "which does not separate them as clearly as Veit et al. (2016) found on fully trained nets")
    return (f"Deleting one block of {_label(res)} raises its training error by {100 * res['mean_rise']:.1f} points "
            f"on average ({100 * res['base_error']:.1f} % to {100 * res['mean_error']:.1f} %), while deleting one "
            f"block of {_label(plain)} raises it by {100 * plain['mean_rise']:.1f} points (to "
            f"{100 * plain['mean_error']:.1f} %; chance is {100 * (1 - 1 / 10):.0f} % for 10 classes), {verdict}.")


def gradients_sentence(results: Sequence[dict]) -> str | None:
    """The gradient correlation at init: the deepest plain net against the deepest residual one."""
    res, plain = _pick(results, True, True), _pick(results, False, True)
    if res is None or plain is None:
        return None
    agrees = res["correlation"] > plain["correlation"] + 0.1
    return (f"At initialisation, the gradients of neighbouring inputs point the same way in {_label(res)} "
            f"(correlation {res['correlation']:.2f}) but {'hardly at all' if plain['correlation'] < 0.1 else 'less'} "
            f"in {_label(plain)} ({plain['correlation']:.2f}): "
            + ("the deep plain net's gradient is close to noise (\"shattered\", Balduzzi et al. 2017), a poor "
               "guide for gradient descent, while the shortcuts keep it smooth."
               if agrees else "at this depth the shortcuts do not yet make the difference Balduzzi et al. (2017) found."))


def landscape_sentence(results: Sequence[dict]) -> str | None:
    """Plain vs residual landscape: bending (non-convexity) and the rise at |α| = 0.2."""
    res, plain = _pick(results, True, True), _pick(results, False, True)
    if res is None or plain is None or res["concave_share"] is None or plain["concave_share"] is None:
        return None
    step = min((p for p in res["rise"]), key=lambda p: abs(p["alpha"] - 0.2))
    rise = {r["net"]: next(p["mean"] for p in r["rise"] if p["alpha"] == step["alpha"]) for r in (res, plain)}
    smoother = res["concave_share"] < plain["concave_share"]
    shape = (f"{_label(res)}'s loss around its trained weights is the smoother bowl (its slices bend down at "
             f"{100 * res['concave_share']:.0f} % of their points, {_label(plain)}'s at "
             f"{100 * plain['concave_share']:.0f} %), as Li et al. (2018) found"
             if smoother else
             f"{_label(res)}'s loss surface is not smoother than {_label(plain)}'s here (its slices bend down at "
             f"{100 * res['concave_share']:.0f} % of their points, the plain net's at "
             f"{100 * plain['concave_share']:.0f} %), unlike Li et al. (2018)'s fully trained nets")
    steeper = rise[res["net"]] > rise[plain["net"]]
    return (f"{shape}; {_label(plain)} sits higher (loss {plain['base_loss']:.2f} against {res['base_loss']:.2f}), "
            f"and its loss rises {'more slowly' if steeper else 'faster'} along random directions "
            f"({rise[plain['net']]:+.2f} against {rise[res['net']]:+.2f} at |α| = {step['alpha']:.2f}), so at this "
            "scale the shortcuts' landscape is " + ("the deeper, rounder valley, not the flatter one."
                                                    if steeper else "also the flatter one."))


def _e(x: object) -> str:
    return html.escape(str(x))


def _table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    return ("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows) + "</table>")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _figure(fig) -> str:
    return "<figure>" + fig.to_html(full_html=False, include_plotlyjs=False, default_width="100%") + "</figure>"


def _lesion_html(results: Sequence[dict]) -> list[str]:
    rows = [(r["net"], _pct(r["base_error"]), _pct(r["mean_error"]), f"{100 * (r['mean_rise'] or 0):+.1f}",
             _pct(r["max_error"]), len(r["deleted"]), len(r["not_deletable"])) for r in results]
    return [_table(("run", "intact train err %", "one block deleted: mean %", "rise (points)", "worst %",
                    "blocks deleted", "plain blocks that change shape (kept)"), rows), _figure(lesion_figure(results))]


def why_section_html(run_dirs: Sequence[str | Path], data: str | None = None) -> str:
    """The HTML of the section (plotly.js must already be on the page). A run or dataset the
    analyses cannot read is one line in the section, never a lost report."""
    parts = ["<h2>Why shortcuts help</h2>"]
    try:
        res = why_results(run_dirs, data)
    except UserError as e:
        return parts[0] + f"<p class='na'>not measured: {_e(e)}</p>"
    if not res["lesion"]:
        return parts[0] + "<p class='na'>no trained run yet: the lesion, gradient and landscape studies need checkpoints</p>"
    first = res["lesion"][0]
    parts.append(f"<p class='meta'>Three later papers' experiments on these nets. Errors: {_e(first['measure'])}."
                 + (f" Not trained yet: {_e(', '.join(res['skipped']))}." if res["skipped"] else "") + "</p>")
    parts.append("<h3>Lesion: deleting blocks (Veit et al. 2016)</h3>")
    if (s := lesion_sentence(res["lesion"])):
        parts.append(f"<p>{_e(s)}</p>")
    parts += _lesion_html(res["lesion"])
    parts.append("<h3>Shattered gradients at initialisation (Balduzzi et al. 2017)</h3>")
    if (s := gradients_sentence(res["gradients"])):
        parts.append(f"<p>{_e(s)}</p>")
    g = res["gradients"]
    parts.append(_table(("architecture", "correlation (mean of seeds)", "per seed"),
                        [(r["arch"], f"{r['correlation']:.3f}", ", ".join(f"{c:.3f}" for c in r["per_seed"]))
                         for r in g]))
    parts.append(f"<p class='meta'>{g[0]['points']} inputs on a line through input space "
                 f"({g[0]['input_size']}² images), f = the logits projected on a random direction; cosine "
                 "similarity of ∂f/∂x at neighbouring inputs.</p>")
    parts.append(_figure(gradients_figure(g)))
    if res["landscape"]:
        land = res["landscape"]
        parts.append("<h3>Loss landscape (Li et al. 2018)</h3>")
        if (s := landscape_sentence(land)):
            parts.append(f"<p>{_e(s)}</p>")
        parts.append(f"<p class='meta'>Training loss on {land[0]['images']} images at w + α·d₁ + β·d₂, "
                     f"random filter-normalised directions, α and β in ±{land[0]['span']:g} on a "
                     f"{land[0]['grid']}×{land[0]['grid']} grid; BN statistics and parameters fixed.</p>")
        parts += [_figure(landscape_figure(land)), _figure(rise_figure(land))]
    return "\n".join(parts)
