"""Experiments: named sets of runs, resumable, analysed; the demo command end to end."""

import json

import pytest

from resnet_explorer import count
from resnet_explorer.cli import main
from resnet_explorer.experiments import run_experiment
from resnet_explorer.plans import degradation, load_plans, shortcuts
from resnet_explorer.runs import RunDir
from resnet_explorer.recipes import get_recipe
from resnet_explorer.errors import UsageError
from resnet_explorer.errors import TrainingError
from resnet_explorer.runs import read_metrics
from resnet_explorer.train import train
from resnet_explorer.zoo import get_spec

TINY = get_recipe("test", iters=10, batch_size=32)


def test_degradation_and_shortcut_plans():
    plans = degradation((20, 56))
    assert [p.name for p in plans] == ["plain-20", "plain-56", "resnet-20", "resnet-56"]
    assert [p.spec.residual for p in plans] == [False, False, True, True]
    assert count(plans[1].spec).params == count(plans[3].spec).params == 853_018
    assert plans[0].recipe.name == "cifar-paper"
    s = shortcuts(20)
    assert [p.name for p in s] == ["plain-20", "resnet-20-A", "resnet-20-B", "resnet-20-C", "resnet-20-gated"]
    assert [p.spec.shortcut for p in s[1:]] == ["A", "B", "C", "A"]
    assert [p.spec.shortcut_kind for p in s] == ["identity"] * 4 + ["gated"]


def test_parallel_runs_start_costliest_first_and_the_manifest_keeps_the_plan_order(tmp_path, monkeypatch):
    """With --jobs, the deep nets start first (so they overlap instead of the deepest training
    alone at the end); the manifest and the log still list the runs in the plan's order."""
    import resnet_explorer.experiments as E

    started = []
    monkeypatch.setattr(E, "run_jobs", lambda work, n, log, on_done, watch: (started.extend(j.name for j in work), ([], None))[1])
    plans = degradation((8, 20, 14), TINY, width=4) + [E.RunPlan("resnet-20-long", get_spec("cifar-resnet20", width=4), get_recipe("test", iters=40))]
    logs = []
    run_experiment("order", plans, "synthetic:256", tmp_path / "exp", progress=False, log=logs.append, jobs=2)
    assert started == ["resnet-20-long", "plain-20", "resnet-20", "plain-14", "resnet-14", "plain-8", "resnet-8"]
    assert [r["name"] for r in json.loads((tmp_path / "exp" / "manifest.json").read_text())["runs"]] == [p.name for p in plans]
    assert [line.split("] ")[1].split(":")[0] for line in logs if line.startswith("[")] == [p.name for p in plans]


@pytest.mark.slow
def test_experiment_runs_analyses_and_skips_finished_runs(tmp_path):
    plans = degradation((8, 14), TINY, width=4)
    logs = []
    out = run_experiment("degradation", plans, "synthetic:256", tmp_path / "exp", progress=False, log=logs.append)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["status"] for r in manifest["runs"]] == ["finished"] * 4
    assert manifest["data"] == "synthetic:256" and manifest["runs"][3]["spec"]["name"] == "cifar-resnet14"
    a = json.loads((out / "resnet-14" / "analysis.json").read_text())
    assert a["iteration"] == 10
    assert len(a["layer_responses"]) == 13  # every 3x3 layer: depth - 1 (the fc is not one)
    assert a["layer_responses"][0]["name"] == "conv1.0.bn"
    assert [n for n, _ in a["gradient_norms"]["init"]][-1] == "fc"
    assert a["gradient_norms"]["init"] != a["gradient_norms"]["final"]
    before = (out / "plain-8" / "metrics.jsonl").read_text()
    logs.clear()
    run_experiment("degradation", plans, "synthetic:256", out, progress=False, log=logs.append)
    assert all("skipped" in line for line in logs)
    assert (out / "plain-8" / "metrics.jsonl").read_text() == before
    # trained but not analysed (e.g. stopped during the analysis): analysed, not retrained
    assert RunDir(out / "plain-8").iteration() == 10 and RunDir(out / "plain-8").analysis_current()
    (out / "plain-8" / "analysis.json").unlink()
    assert not RunDir(out / "plain-8").analysis_current()
    logs.clear()
    run_experiment("degradation", plans, "synthetic:256", out, progress=False, log=logs.append)
    assert "(trained; analysing)" in logs[0] and all("skipped" in line for line in logs[1:])
    assert (out / "plain-8" / "metrics.jsonl").read_text() == before
    assert json.loads((out / "plain-8" / "analysis.json").read_text())["iteration"] == 10


def test_experiment_resumes_a_partial_run(tmp_path):
    plans = degradation((8,), TINY, width=4)
    out = tmp_path / "exp"
    full = train(plans[0].spec, "synthetic:256", TINY, tmp_path / "full", progress=False)
    train(plans[0].spec, "synthetic:256", TINY, out / "plain-8", progress=False, should_stop=lambda it: it == 4)
    logs = []
    run_experiment("degradation", plans, "synthetic:256", out, progress=False, log=logs.append)
    assert "(resumed)" in logs[0] and RunDir(out / "plain-8").iteration() == 10
    keys = ("iter", "train_loss", "test_error")
    strip = lambda rows: [{k: r.get(k) for k in keys} for r in rows]  # noqa: E731
    assert strip(read_metrics(out / "plain-8")) == strip(read_metrics(full.run_dir))


def test_a_different_experiment_in_the_same_directory_is_refused(tmp_path):
    out = run_experiment("degradation", degradation((8,), TINY, width=4)[:1], "synthetic:256",
                         tmp_path / "exp", progress=False, log=lambda m: None)
    with pytest.raises(TrainingError, match="holds a different experiment"):
        run_experiment("degradation", degradation((14,), TINY, width=4)[:1], "synthetic:256", out,
                       progress=False, log=lambda m: None)


def test_user_defined_experiment_file(tmp_path):
    f = tmp_path / "mine.json"
    f.write_text(json.dumps([
        {"name": "wide", "arch": "cifar-resnet8", "arch_options": {"width": 6}, "recipe": "test",
         "recipe_options": {"iters": 4}},
        {"name": "plain", "arch": "cifar-plain8", "recipe": "test"},
    ]))
    plans = load_plans(f)
    assert [p.name for p in plans] == ["wide", "plain"]
    assert plans[0].spec.stages[1].width == 6 and plans[0].recipe.max_iters == 4
    f.write_text("[{}]")
    with pytest.raises(UsageError, match="is invalid"):
        load_plans(f)


def test_experiment_cli_bad_inputs(tmp_path, capsys):
    assert main(["experiment", "nothing", "--data", "synthetic"]) == 2
    assert "unknown experiment 'nothing'" in capsys.readouterr().err
    assert main(["experiment", "degradation"]) == 2
    assert "needs --data" in capsys.readouterr().err
    assert main(["experiment", "degradation", "--data", "synthetic", "--depths", "20,x"]) == 2
    assert "--depths '20,x' is invalid" in capsys.readouterr().err


def test_demo_on_a_cpu_is_the_cpu_demo_design(monkeypatch, capsys):
    """Without options, the CPU demo trains plain and residual 20/56 nets, 8 wide, with the one
    cpu-demo recipe (the paper's SGD, lr steps, no augmentation) on synthetic-demo, and its
    notes say so (what the nets and the data are)."""
    import resnet_explorer.cli_train as cli_train
    from resnet_explorer.data.cpus import available_cpus

    seen = {}
    monkeypatch.setattr(cli_train, "_run_experiment_and_report",
                        lambda args, name, plans, notes, why: seen.update(args=args, plans=plans, notes=notes, why=why) or 0)
    assert main(["demo", "--device", "cpu", "--quiet"]) == 0

    assert seen["args"].data == "synthetic-demo" and seen["args"].out == "runs/demo"
    assert seen["args"].jobs == (2 if available_cpus() >= 2 else 1)  # two nets at once, a core each
    assert seen["why"]  # the demo's report says why shortcuts help
    plans = seen["plans"]
    assert [p.name for p in plans] == ["plain-20", "plain-56", "resnet-20", "resnet-56"]
    assert {p.spec.stages[0].layers[0].out_channels for p in plans} == {8} and len({json.dumps(p.recipe.to_dict()) for p in plans}) == 1
    r = plans[0].recipe
    assert (r.name, r.max_iters, r.batch_size, r.lr, r.milestones, r.augment) == ("cpu-demo", 1000, 64, 0.005, [800, 900], False)
    assert (r.momentum, r.weight_decay) == (0.9, 1e-4)
    notes = " ".join(seen["notes"])
    assert "nets 8 wide" in notes and "1000 iterations of batch 64" in notes and "no augmentation" in notes
    assert "synthetic-demo" in notes and "colour cast" in notes
    assert "synthetic-demo, 1000 iterations each" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_end_to_end_small(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--data", "synthetic:256", "--width", "4", "--iters", "10", "--depths", "8,14",
                 "--set", "batch_size=32", "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert code == 0
    assert (out / "report.html").exists()
    html = (out / "report.html").read_text()
    assert "nets 4 wide" in html and "plain-14" in html and "resnet-14" in html
    assert "no augmentation" in html and "one pass in eval mode" in html
    assert "too close to call at this budget" in html and "Shortcuts fix it" not in html  # 10 iterations decide nothing
    assert "<h2>Why shortcuts help</h2>" in html  # the demo's report says why
    assert "Training error is one pass in eval mode (BN running statistics, no augmentation) over the first 256" in text
    assert "plain-8" in text and "resnet-14" in text and "report:" in text
    assert json.loads((out / "manifest.json").read_text())["name"] == "degradation"
