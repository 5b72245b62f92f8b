"""Whether a difference between two measured error rates is a result, or within their noise.

An error rate measured on n images moves by about √(p(1−p)/n) when measured on as many other
images (its standard error). A claim "a < b" is decided only when its margin is more than
`Z` standard errors of the difference: then it *holds* or *fails*; inside that band it is
*too close to call at this budget*, and the verdict says the margin it would need (more
images, or longer training that separates the nets further). This is the measurement's own
noise, a lower bound: a second seed of the same run moves it further.
"""

from __future__ import annotations

import math

Z = 2.0  # standard errors of the difference a margin must exceed (about 95 % two-sided)
HOLDS, FAILS, TIE, UNKNOWN = "holds", "fails", "too close to call", None
LABELS = {HOLDS: "✓ holds", FAILS: "✗ FAILS", TIE: "≈ too close to call at this budget", UNKNOWN: "? n/a"}


def standard_error(error: float | None, images: int | None) -> float | None:
    """The standard error of an error rate (a fraction) measured on ``images`` images; None
    when either is unknown. The rate is smoothed by one image each way ((k+1)/(n+2)) so that
    0 % or 100 % on a few images is not taken as exact."""
    if error is None or not images or images <= 0:
        return None
    p = (error * images + 1) / (images + 2)
    return math.sqrt(p * (1 - p) / images)


def decide(margin: float | None, noise: float | None) -> str | None:
    """`HOLDS` / `FAILS` / `TIE` for a claim that holds by ``margin`` (negative: fails by it),
    with ``noise`` the standard error of the difference. Unknown noise: by the sign alone."""
    if margin is None:
        return UNKNOWN
    if noise is not None and abs(margin) <= Z * noise:
        return TIE
    return HOLDS if margin >= 0 else FAILS


def difference_noise(*errors: float | None) -> float | None:
    """The standard error of a difference of independent measurements (None if one is unknown)."""
    if any(e is None for e in errors):
        return None
    return math.sqrt(sum(e * e for e in errors))  # type: ignore[operator]


def explain(verdict: str | None, margin: float | None, noise: float | None) -> str:
    """One line for a verdict in points: the margin, and for a tie the margin it would need."""
    if verdict is UNKNOWN or margin is None:
        return ""
    points = f"{100 * abs(margin):.1f} points"
    if noise is None:
        return f"by {points} (noise unknown: the runs do not say on how many images they were measured)"
    needs = f"{100 * Z * noise:.1f} points"
    if verdict == TIE:
        return (f"the difference, {points}, is within the measurement's noise: it would need more than {needs} "
                "to count (measure on more images, or train longer)")
    return f"by {points} (with this noise a difference counts above {needs})"


def below(error: float, images: int | None, reference: float, what: str = "") -> dict:
    """Whether an error rate measured on ``images`` images is below a fixed ``reference`` (chance,
    say): ``{"verdict", "margin", "noise", "text"}``, the text one line for a notebook."""
    margin, noise = reference - error, standard_error(error, images)
    verdict = decide(margin, noise)
    claim = f"{100 * error:.1f} % < {what or 'the reference'} {100 * reference:g} %"
    return {"verdict": verdict, "margin": margin, "noise": noise,
            "text": f"{LABELS[verdict]}: {claim}: {explain(verdict, margin, noise)}"}
