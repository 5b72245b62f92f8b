"""benchmarks/gpu_check.sh, the prepared GPU check, in its tiny CPU mode (so the script that a
session lent a GPU runs first can never go stale), and the arithmetic of its tables."""

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from test_jobs import image_folder

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.fixture(scope="module")
def small_tar(tmp_path_factory):
    """A CIFAR-shaped image folder of 150 PNGs, packed as the header's carried tarball."""
    tmp = tmp_path_factory.mktemp("data")
    images = image_folder(tmp / "images")
    tar = tmp / "small.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        for split in ("train", "test"):
            t.add(images / split, arcname=split)
    return tar


def tiny_env(tmp_path, tar, **extra):
    return {**os.environ, "DEVICE": "cpu", "TINY": "1", "DATA_TAR": str(tar), "OUT": str(tmp_path / "out"),
            "WORK": str(tmp_path / "work"), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **extra}


def members(tar: Path) -> list[str]:
    with tarfile.open(tar) as t:
        return t.getnames()


@pytest.mark.slow
def test_probe_then_fig1_in_one_call_leave_their_tables_and_runs(tmp_path, small_tar):
    r = subprocess.run(["bash", str(SCRIPT), "probe", "fig1"], capture_output=True, text=True, timeout=600,
                       env=tiny_env(tmp_path, small_tar), cwd=ROOT)
    out = tmp_path / "out"
    assert r.returncode == 0, (out / "log.txt").read_text()[-3000:] if (out / "log.txt").exists() else r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["env.txt", "fig1.json", "fig1.md", "fig1.tar.gz", "log.txt",
                                                      "probe.json", "probe.md", "probe.tar.gz"]  # <= 8 come back
    assert "torch" in (out / "env.txt").read_text()
    probe = json.loads((out / "probe.json").read_text())
    assert [x["mode"] for x in probe["rows"]] == ["off", "reduce-overhead", "step"]
    for x in probe["rows"]:
        assert x["iters"] == 6 and x["ms_per_step"] > 0 and 0 <= x["fp32_test_error"] <= 1
    bn = probe["bn_check"]
    assert bn["counts_equal"] and bn["running_var"] < 1e-4 and bn["weights"] < 1e-4  # uncompiled here: equal
    assert probe["best"] in ("off", "reduce-overhead", "step") and "Fastest correct step" in (out / "probe.md").read_text()
    fig1 = json.loads((out / "fig1.json").read_text())
    assert [x["name"] for x in fig1["runs"]] == ["resnet-8", "plain-8", "resnet-14", "plain-14"]
    assert all(x["iters"] == 6 and x["at_train_iter"] == 6 and x["train_error"] is not None for x in fig1["runs"])
    assert "one after another" in fig1["head"] and "(probe, " in fig1["head"]  # the probe's ms/step chose it
    assert "Orderings of Fig. 1 / 6 on training error at iteration 6" in (out / "fig1.md").read_text()
    for part, runs in (("probe", ("off", "reduce-overhead", "step")), ("fig1", ("resnet-8", "plain-14"))):
        names = members(out / f"{part}.tar.gz")
        assert not [n for n in names if n.endswith(".pt")]  # no checkpoints travel back
        for run in runs:
            assert f"{part}/{run}/metrics.jsonl" in names and f"{part}/{run}/env.json" in names
            assert f"{part}/logs/{run}.log" in names


@pytest.mark.slow
def test_a_sigterm_mid_part_still_leaves_its_table_and_tarball(tmp_path, small_tar):
    env = tiny_env(tmp_path, small_tar, TINY_ITERS="100000")  # far more than it will get to
    proc = subprocess.Popen(["bash", str(SCRIPT), "cifar"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, cwd=ROOT)
    started = tmp_path / "work" / "cifar" / "a" / "env.json"  # written just before its loop starts
    deadline = time.time() + 300
    while not started.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    time.sleep(3)  # a few iterations
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 143, output[-3000:]
    assert "stopped by SIGTERM; tables and tarballs written" in output
    out = tmp_path / "out"
    rows = json.loads((out / "cifar.json").read_text())
    assert [x["row"] for x in rows] == ["a", "c"]
    assert all("(stopped)" in line for line in (out / "cifar.md").read_text().splitlines() if line.startswith("| ("))
    assert rows[0]["stopped"].startswith("stopped by SIGINT") and 0 < rows[0]["iters"] < 100000
    assert "Verdict: not settled" in (out / "cifar.md").read_text()
    assert "cifar/a/metrics.jsonl" in members(out / "cifar.tar.gz") or "cifar/a/env.json" in members(out / "cifar.tar.gz")


@pytest.mark.slow
def test_the_imagenet_part_runs_tiny_with_its_memory_bound(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "TINY": "1", "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"),
           "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", str(SCRIPT), "imagenet"], capture_output=True, text=True, timeout=600, env=env,
                       cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    table = (tmp_path / "out" / "imagenet.md").read_text()
    for row in ("input only", "cpu (PIL, 1 workers)", "gpu (decode + ops on cpu", "synthetic", "end to end"):
        assert row in table, table
    assert "failed" not in table, table
    head = json.loads((tmp_path / "out" / "imagenet.json").read_text())["head"]
    assert head["shm_budget_gib"] == 4.0 and head["prefetch"] == {"1": 4}
    assert (tmp_path / "out" / "imagenet.tar.gz").is_file() and (tmp_path / "out" / "env.txt").is_file()


def test_a_wrong_part_is_one_line_and_runs_nothing(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), "probe", "all"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work")}, cwd=ROOT)
    assert r.returncode == 2 and "usage: bash benchmarks/gpu_check.sh [probe] [cifar] [fig1] [imagenet]" in r.stdout


def test_the_header_plans_each_session_inside_its_call():
    """Every device call in the header fits its timeout_s, and each part its own budget."""
    head = SCRIPT.read_text().split("set -uo pipefail")[0]
    assert head.count('carry=[".carry"], timeout_s=590') == 2 and "timeout_s=590)" in head
    for line in ("Session 1: 20 + 145 + 420 = 585 s <= 590", "Session 2: 20 + 145 + 420 = 585 s <= 590",
                 "Session 3: 10 + 470 + 100 = 580 s"):
        assert line in head
    assert 20 + (100 + 25 + 20) + (360 + 40 + 20) == 585 and 20 + 145 + (360 + 40 + 20) == 585
    assert 10 + (360 + 90 + 20) + (80 + 20) == 580
    body = SCRIPT.read_text()
    assert 'probe "${PROBE_BUDGET:-100}" 25' in body and 'cifar "${CIFAR_BUDGET:-360}" 40' in body
    assert "echo 360 || echo 400)}\" 40" in body and "timeout -k 20" in body and "run 80" in body
    assert "+ 90 )) \"$PY\" benchmarks/imagenet_input.py" in body


# -- the tables' arithmetic, without training -----------------------------------------------------------
def run_row(row, seed, evals, iters=64000, planned=64000, final=None):
    return {"row": row, "seed": seed, "what": row, "iters": iters, "planned_iters": planned, "wall_s": 1.0,
            "images_per_s": 1.0, "evals": evals, "final_error": final if final is not None else evals[-1][1],
            "best_error": min(e for _, e in evals)}


def test_fidelity_compares_at_the_largest_iteration_every_row_evaluated():
    from cifar_fidelity import common_iteration, table

    stopped = run_row("a", 0, [(1000, 0.5), (2000, 0.4), (45437, 0.2)], iters=45437)  # a budget stop
    full = run_row("c", 0, [(1000, 0.6), (2000, 0.45), (45000, 0.21), (46000, 0.2)], iters=46000)
    assert common_iteration([stopped, full]) == 2000  # not min(45437, 46000), which only one has
    text = table([stopped, full], "cifar-resnet20", "cuda")
    assert "err % at iter 2000 |" in text and "| 40.00 |" in text and "| 45.00 |" in text
    assert "- (a) - (c): -5.00 pp" in text
    assert common_iteration([stopped, {"row": "c", "seed": 0, "error": "failed"}]) is None


@pytest.mark.parametrize("a, c, verdict", [
    ([0.105, 0.108], [0.12], "meets the goal"),
    ([0.121, 0.123, 0.119], [0.122], "the data (the JPEG copy) explains it"),
    ([0.121, 0.123], [0.090], "the engine explains the gap"),
    ([0.121, 0.123], [0.15], "neither explains it alone"),
])
def test_the_fidelity_verdict_says_which_part_explains_a_gap(a, c, verdict):
    from cifar_fidelity import verdict as judge

    rows = [run_row("a", i, [(64000, e)]) for i, e in enumerate(a)] + [run_row("c", 0, [(64000, c[0])])]
    assert verdict in judge(rows)
    assert "not settled" in judge([run_row("a", 0, [(1000, 0.5)], iters=1000), run_row("c", 0, [(64000, 0.1)])])


def test_the_seeds_give_a_mean_and_spread():
    from cifar_fidelity import table

    rows = [run_row("a", s, [(64000, e)]) for s, e in enumerate((0.09, 0.10, 0.11))]
    assert "- (a) 10.00 ± 1.00 (9.00-11.00, 3 seeds) %" in table(rows, "cifar-resnet20", "cuda")


def test_fig1_chooses_one_after_another_only_when_it_fits(tmp_path):
    import argparse

    from gpu_check import fig1_plan

    a = argparse.Namespace(work=tmp_path, compile=None, iters=64000, depths=(20, 56), budget=400)
    jobs, why = fig1_plan(a)  # no probe: the guesses (1.2 ms/step, 60 s compile) -> 614 + 240 s
    assert jobs == 4 and "guess" in why and "side by side" in why.split("->")[1]
    (tmp_path / "probe.json").write_text(json.dumps({"best": "step", "ms_per_step": {"step": 0.3},
                                                     "first_window_s": {"step": 20}}))
    jobs, why = fig1_plan(a)  # 2 x 19.2 + 2 x 57.6 s + 4 x 20 s compile = 234 s
    assert jobs == 1 and "one after another 234 s" in why and "(probe, step)" in why


def test_the_cpu_path_holds_at_most_its_shared_memory_budget():
    from imagenet_input import prefetch_factor

    batch = 256 * 3 * 224 * 224 * 4  # 154 MB
    assert prefetch_factor(16, 256, 4.0) == 1 and prefetch_factor(8, 256, 4.0) == 3 and prefetch_factor(1, 8, 4) == 4
    for workers in (1, 4, 8, 16):
        k = prefetch_factor(workers, 256, 4.0)
        assert 1 <= k <= 4 and (k == 1 or workers * k * batch <= 4 * 2**30)
    assert 16 * 4 * batch > 9.8e9  # what the check held before: about 10 GB


def test_another_seed_starts_only_if_the_longest_finished_one_still_fits(tmp_path):
    from cifar_fidelity import fits_before

    ledger = tmp_path / "walls-a.txt"
    assert fits_before(str(ledger), time.time() + 10)  # none finished yet: start
    ledger.write_text("120.0\n150.5\n")
    assert fits_before(str(ledger), time.time() + 200) and not fits_before(str(ledger), time.time() + 100)
    assert fits_before(None, time.time() + 1) and fits_before(str(ledger), None)


def test_the_probe_trusts_only_a_timed_coherent_step():
    from gpu_check import correct, probe_table

    def row(mode, ms=1.0, err=0.40, fp32=0.405, iters=2000):
        return {"mode": mode, "iters": iters, "planned": 2000, "ms_per_step": ms, "test_error": err,
                "fp32_test_error": fp32, "counters": {"graph_breaks": 0, "graphs": 1, "cudagraph_skips": 0}}

    eager, good = row("off", 5.6), row("step", 1.1)
    bn = {"steps": 5, "running_mean": 0.01, "running_var": 0.02, "weights": 0.01, "counts_equal": True}
    assert correct(good, bn, eager) is None
    assert "BN statistics" in correct(good, dict(bn, counts_equal=False), eager)  # updated twice, say
    assert "BN statistics" in correct(good, dict(bn, running_var=0.9), eager)  # never updated
    assert "fp32 re-evaluation" in correct(row("step", fp32=0.47), bn, eager)
    assert "from the eager step's" in correct(row("step", err=0.90, fp32=0.90), bn, eager)  # a step that does not train
    assert "not timed" in correct(row("step", ms=None, iters=1), bn, eager)
    text, best = probe_table([eager, row("reduce-overhead", 2.4, err=0.9, fp32=0.9), good], "head", bn)
    assert best == "step" and "Fastest correct step: step" in text
    text, best = probe_table([eager, row("reduce-overhead", 2.4), row("step", 1.1, fp32=0.6)], "head", bn)
    assert best == "reduce-overhead"


def test_fig1_orderings_hold_fail_or_are_too_close_to_call():
    """Each Fig. 1 / 6 ordering gets the three-way verdict: a gap inside the noise of training errors
    averaged over the logged images is a tie, never a hold or a failure."""
    import gpu_check

    row = lambda name, residual, depth, err: dict(name=name, residual=residual, depth=depth, train_error=err)  # noqa: E731
    rows = [row("resnet-20", True, 20, 0.100), row("plain-20", False, 20, 0.120),
            row("resnet-56", True, 56, 0.099), row("plain-56", False, 56, 0.080)]
    plain, beats, deeper = gpu_check.orderings(rows, images=100 * 128)
    assert plain.startswith("- plain-56 > plain-20: ✗ FAILS (8.00 vs 12.00 %")
    assert beats.startswith("- ResNet-56 < plain-56: ✗ FAILS (9.90 vs 8.00 %")
    assert deeper.startswith("- ResNet-56 <= ResNet-20: ≈ too close to call at this budget (9.90 vs 10.00 %")
    # the same gap on 10x the images and 10x the gap: decided
    rows[2]["train_error"] = 0.09
    assert "✓ holds" in gpu_check.orderings(rows, images=1000 * 128)[2]


def test_fig1_shows_table_6_only_for_the_net_the_paper_measured(tmp_path):
    """The paper's error sits beside ResNet-20/56 at the paper's width 16, with its table and source;
    a narrower net, or a plain one (Table 6 has none), gets no paper number."""
    import gpu_check

    for name in ("resnet-20", "plain-20"):
        (tmp_path / name).mkdir()
    paper = gpu_check.fig1_rows(tmp_path, ["resnet-20", "plain-20"], 10, width=16)
    assert [r["table6_error"] for r in paper] == [8.75, None]
    assert paper[0]["table6_source"].startswith("Table 6, He et al. 2015")
    narrow = gpu_check.fig1_rows(tmp_path, ["resnet-20", "plain-20"], 10, width=8)
    assert [r["table6_error"] for r in narrow] == [None, None]
    table = gpu_check.fig1_table(paper, "head", images=128)
    assert "| 8.75 |" in table and "Table 6 %: the paper's test error of the same net (64k iterations; Table 6, He" in table
