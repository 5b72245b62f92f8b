"""The command line and the benchmark scripts, run as a user runs them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from resnet_explorer import get_spec
from resnet_explorer.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json_has_integer_params_and_macs(capsys):
    code, out, _ = run_cli(capsys, "info", "cifar-resnet56", "--json")
    d = json.loads(out)
    assert code == 0 and d["arch"] == "cifar-resnet56"
    assert d["params"] == 853_018 and isinstance(d["macs"], int)
    assert d["spec"]["shortcut"] == "A" and "1 multiply-add = 1 FLOP" in d["convention"]


def test_info_options(capsys):
    _, out, _ = run_cli(capsys, "info", "resnet50", "--stride-at", "3x3", "--shortcut", "B", "--json")
    assert json.loads(out)["macs"] == pytest.approx(4.09e9, rel=0.005)
    _, out, _ = run_cli(capsys, "info", "resnet34", "--plain", "--json")
    d = json.loads(out)
    assert d["spec"]["residual"] is False and d["spec"]["name"] == "plain34"
    _, out, _ = run_cli(capsys, "info", "resnet18", "--input", "448", "--classes", "10", "--json")
    d = json.loads(out)
    assert d["input_size"] == 448 and d["stages"]["fc"]["out"] == [10, 1, 1]


def test_info_text_and_layers(capsys):
    code, out, _ = run_cli(capsys, "info", "resnet50", "--layers")
    assert code == 0
    assert "25,557,032" in out and "3.86 G" in out and "conv and fc layers counted" in out
    assert "paper: 3.8 G" in out
    assert "conv3_x.0.conv1" in out and "conv3_x.0.shortcut.conv" in out


def test_info_reads_a_spec_file(tmp_path, capsys):
    path = tmp_path / "net.json"
    path.write_text(get_spec("cifar-resnet20", width=8).to_json())
    _, out, _ = run_cli(capsys, "info", str(path), "--json")
    assert json.loads(out)["params"] < 269_722 / 3


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["info", "cifar-resnet21"], "6n+2"),
        (["info", "resnet50", "--input", "0"], "input_size=0 is invalid"),
        (["info", "vgg16", "--input", "16"], "use input_size >= 32"),
        (["info", "resnet9000"], "use one of 18, 34"),
        (["info", "missing.json"], "spec file missing.json not found"),
    ],
)
def test_bad_input_one_line_exit_2(capsys, args, fragment):
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == ""
    assert fragment in err and err.count("\n") == 1


@pytest.mark.slow
def test_console_script_and_argparse_errors_are_one_line():
    exe = Path(sys.executable).parent / "resnet-explorer"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "resnet_explorer.cli"]
    r = subprocess.run(cmd + ["info", "resnet50", "--shortcut", "D"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "invalid choice: 'D'" in r.stderr
    r = subprocess.run(cmd + ["tables"], capture_output=True, text=True)
    assert r.returncode == 0
    assert "Table 1" in r.stdout and "Table 6" in r.stdout and "plain-34 / VGG-19 = 18.6%" in r.stdout
    row = next(line for line in r.stdout.splitlines() if line.startswith("resnet50"))
    assert row.split()[1:6] == ["3.8", "3.86", "3.86", "4.09", "4.09"]
    row6 = next(line for line in r.stdout.splitlines() if line.startswith("ResNet-110"))
    assert "1,727,962" in row6 and row6.rstrip().endswith("6.43")


@pytest.mark.slow
def test_count_benchmark_runs_and_agrees_with_fvcore():
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "count_speed.py"), "--repeat", "10"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "True" in r.stdout.splitlines()[1]  # same MACs


@pytest.mark.slow
def test_train_throughput_benchmark_runs():
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--archs", "cifar-resnet8",
         "--iters", "2", "--warmup", "1", "--images", "600", "--workers", "0", "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[2].startswith("cifar-resnet8") and "reference" in lines[2]
    assert any("ours fp32" in line and "x" in line for line in lines[3:])
    assert "failed" not in r.stdout


@pytest.mark.slow
def test_demo_orderings_benchmark_runs_on_a_tiny_setting(tmp_path):
    """The script runs and prints its table (one row per seed, the per-ordering summary),
    on nets and runs far too small for its figures to mean anything."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "demo_orderings.py"), "--seeds", "2", "--depths", "8,14",
         "--iters", "4", "--width", "4", "--data", "synthetic-demo:64", "--lr", "0.01", "--batch", "16",
         "--milestones", "2,3", "--jobs", "1", "--out", str(tmp_path / "b")],  # in-process (jobs: test_jobs)
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "4 iterations of batch 16, lr 0.01 /10 at [2, 3], width 4" in lines[0]
    train = lines.index("Training error % (eval mode, fixed training subset):")
    test = lines.index("Test error %:")
    head = lines[train + 1].split()
    assert head[:5] == ["seed", "plain-8", "plain-14", "resnet-8", "resnet-14"]
    for block in (train, test):
        rows = [lines[block + 2].split(), lines[block + 3].split()]
        assert [row[0] for row in rows] == ["0", "1"]
        assert all(0 <= float(v) <= 100 for row in rows for v in row[1:5])
        assert all(v in ("holds", "FAILS", "tie") for row in rows for v in row[5:8])
        # on 64 images a 4-iteration net's gaps are mostly noise: the verdicts say so, not holds/FAILS
        assert any(v == "tie" for row in rows for v in row[5:8])
        summary = [line for line in lines[block:] if line.startswith("ordering ")][:3]
        assert [s.split(":")[0] for s in summary] == ["ordering 1", "ordering 2", "ordering 3"]
        assert all("of 2 seeds holds " in s and ", tie " in s and ", FAILS " in s and "smallest margin" in s
                   and "seed-to-seed spread" in s for s in summary)
        for s in summary:  # the three counts add up to the seeds
            assert sum(int(x.split()[-1]) for x in s.split("of 2 seeds ")[1].split(";")[0].split(", ")) == 2
    # the runs are kept in --out: one experiment per seed, analysed (eval-mode training error)
    analysis = json.loads((tmp_path / "b" / "seed1" / "resnet-14" / "analysis.json").read_text())
    assert analysis["train_subset"]["images"] == 64 and 0 <= analysis["train_subset"]["error"] <= 1
    recipe = json.loads((tmp_path / "b" / "seed1" / "resnet-14" / "recipe.json").read_text())
    assert (recipe["batch_size"], recipe["lr"], recipe["milestones"]) == (16, 0.01, [2, 3])
    # a malformed option is one line that says what to give
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "demo_orderings.py"), "--milestones", "80%"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--milestones '80%' is invalid: use numbers separated by commas, e.g. 1600,1800" in bad.stderr


@pytest.mark.slow
def test_notebook_smoke_times_benchmark_runs_on_one_notebook():
    """The script runs notebook 07 in smoke mode once and prints its row, the medians and the load."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "notebook_smoke_times.py"), "--notebooks", "07",
                        "--reps", "1", "--busy", "0"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    row = next(line for line in r.stdout.splitlines() if line.startswith("07_vgg_alexnet_baselines"))
    wall, cpu, ok = row.split()[2:5]
    assert float(wall) > 0 and float(cpu) > 0 and ok == "ok"
    assert "medians" in r.stdout and "load average at the end" in r.stdout
