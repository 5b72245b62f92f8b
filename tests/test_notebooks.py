"""The walkthrough notebooks: committed without outputs, one parameters cell each, and every
one runs top to bottom, headless, in smoke mode (RESNET_EXPLORER_SMOKE=1), computing the
paper's numbers it claims to.

Each notebook ends by defining SUMMARY; `notebooks.execute` reads it back from the kernel.
The runs are written into a temporary folder, never into the repository.
"""

import math
import re

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from resnet_explorer import notebooks as N

pytestmark = pytest.mark.slow  # run the fast part alone with: pytest -m 'not slow'

EXPECTED = [
    "00_quickstart", "01_residual_block", "02_architectures_and_flops", "03_degradation_cifar10",
    "04_layer_responses", "05_shortcut_options", "06_imagenet_and_multi_gpu", "07_vgg_alexnet_baselines",
    "08_why_shortcuts_help",
]
PATHS = {p.stem: p for p in N.notebook_paths()}
# Two torch threads that spin-wait slow down many times on a CPU shared with other jobs;
# passive waiting costs nothing on an idle machine.
KERNEL_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def test_the_walkthrough_is_complete():
    assert list(PATHS) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_notebook_is_clean_and_documents_its_modes(name):
    nb = nbformat.read(PATHS[name], as_version=4)
    assert N.problems(nb) == []
    assert N.setup_problems(nb) == []  # the setup cell first, the short mode said (python -m resnet_explorer.notebooks setup)
    params = N.parameters_source(nb)
    assert 'os.environ.get("RESNET_EXPLORER_SMOKE") == "1"' in params
    assert all(f'"{mode}"' in params for mode in ("smoke", "cpu", "gpu")), "SETTINGS for every mode"
    intro = " ".join(nb.cells[0].source.split())
    assert nb.cells[0].cell_type == "markdown" and intro.startswith(f"# {name[:2]} · ")
    # every notebook states its measured smoke time and its GPU settings
    assert re.search(r"smoke.*about \d+ s on 2 CPU cores \(measured\)", intro, re.I), intro
    assert "`gpu`" in intro or "GPU settings: none needed" in intro


def _notebook():
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('import os\nMODE = "smoke" if os.environ.get("RESNET_EXPLORER_SMOKE") == "1" else "cpu"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), params]
    return nb


def test_problems_strip_and_the_check_command(tmp_path, capsys):
    nb = _notebook()
    cell = nbformat.v4.new_code_cell("1 + 1")
    cell.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=3)]
    cell.execution_count = 3
    cell.metadata["execution"] = {"iopub.execute_input": "2025-01-01T00:00:00Z"}
    second = nbformat.v4.new_code_cell("MODE = 'gpu'")
    second.metadata["tags"] = ["parameters"]
    nb.cells += [cell, second]
    nb.metadata["widgets"] = {"state": {}}
    path = tmp_path / "dirty.ipynb"
    nbformat.write(nb, path)

    found = N.problems(nbformat.read(path, as_version=4))
    assert found == ["cell 2 has outputs", "cell 2 has an execution count",
                     "saved widget state in the notebook metadata",
                     "2 cells tagged 'parameters' (need exactly one)"]
    assert N.main(["check", str(path)]) == 1
    assert "strip" in capsys.readouterr().out

    assert N.strip([path]) == [path]
    assert N.strip([path]) == []  # nothing left to change
    clean = nbformat.read(path, as_version=4)
    assert clean.cells[2].outputs == [] and clean.cells[2].execution_count is None
    assert "execution" not in clean.cells[2].metadata and "widgets" not in clean.metadata
    assert clean.cells[2].source == "1 + 1"  # sources are kept
    assert N.problems(clean) == ["2 cells tagged 'parameters' (need exactly one)"]

    del clean.cells[3]
    nbformat.write(clean, path)
    assert N.main(["check", str(path)]) == 1  # no setup cell yet
    assert N.main(["setup", str(path)]) == 0
    assert N.main(["check", str(path)]) == 0


def test_execute_passes_the_mode_and_reads_the_summary_back(tmp_path):
    nb = _notebook()
    nb.cells.append(nbformat.v4.new_code_cell(
        'import pathlib\nSUMMARY = {"mode": MODE, "runs": os.environ.get("RESNET_EXPLORER_RUNS"), "cwd": str(pathlib.Path.cwd())}'))
    path = tmp_path / "ok.ipynb"
    nbformat.write(nb, path)
    work = tmp_path / "work"
    work.mkdir()
    done = N.execute(path, smoke=True, cwd=work, runs=tmp_path / "runs", env=KERNEL_ENV)
    assert done.summary == {"mode": "smoke", "runs": str(tmp_path / "runs"), "cwd": str(work)}
    assert len(done.nb.cells) == 3  # the cell that reads SUMMARY back is removed again
    assert N.execute(path, smoke=False, cwd=work, env=KERNEL_ENV).summary["mode"] == "cpu"


def test_execute_fails_on_the_first_error(tmp_path):
    nb = _notebook()
    nb.cells += [nbformat.v4.new_code_cell("raise ValueError('broken cell')"),
                 nbformat.v4.new_code_cell("SUMMARY = 1")]
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(CellExecutionError, match="broken cell"):
        N.execute(path, cwd=tmp_path, env=KERNEL_ENV)


# -- every notebook, executed in smoke mode ---------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Executes a notebook once per test module (smoke mode, runs in a temporary folder)."""
    base = tmp_path_factory.mktemp("notebooks")
    done = {}

    def execute(name: str) -> N.Executed:
        if name not in done:
            done[name] = N.execute(PATHS[name], smoke=True, cwd=base, runs=base / "runs", env=KERNEL_ENV)
        return done[name]

    yield execute
    assert not (N.NOTEBOOK_DIR / "runs").exists(), "a notebook wrote runs into the repository"


def test_00_quickstart(run):
    s = run("00_quickstart").summary
    assert s["params"] == 269_722 and s["macs"] == 40_551_040  # Table 6's ResNet-20
    assert s["iterations"] == 100
    assert s["test_error"] < 0.85  # chance is 0.9: it learned something in 100 iterations
    assert s["learned"] == "holds"  # and the notebook says so only as far as 2,000 test images can tell


def test_01_residual_block(run):
    done = run("01_residual_block")
    s = done.summary
    assert s["identity_exact"] is True and s["plain_zero"] is True
    # 1x1 projections 16->32 (+ BN) where the shape changes; C also on 32->32
    assert s["shortcut_params"] == {"A": [0, 0], "B": [16 * 32 + 64, 0], "C": [16 * 32 + 64, 32 * 32 + 64]}
    assert s["resnet20_params"]["A"] == 269_722
    assert s["resnet20_params"]["A"] < s["resnet20_params"]["B"] < s["resnet20_params"]["C"]
    spread = s["gradient_spread"]
    assert spread["plain-56"] > 10 * spread["resnet-56"] and spread["plain-56"] > spread["plain-20"]
    assert len(s["second_relu_clipped"]) == 9 and all(0.05 < v < 0.7 for v in s["second_relu_clipped"].values())
    assert "ResNet-34 C" in done.text() and "1,092,992" in done.text()  # Table 3 printed


def test_02_architectures_and_flops(run):
    done = run("02_architectures_and_flops")
    s = done.summary
    assert s["resnet34_macs"] == 3_663_761_408 and "3.66" in done.text()
    assert s["table1"]["resnet50"] == 3_857_973_248 and s["resnet50_v15_macs"] == 4_089_184_256
    assert round(s["table1"]["resnet152"] / 1e9, 2) == 11.28
    assert abs(s["plain34_over_vgg19"] - 0.18) < 0.01  # "18% of VGG-19"
    # Fig. 5: basic block on 56x56x64, bottleneck on 56x56x256
    assert s["block_macs"] == {"basic (ResNet-34)": 2 * 56 * 56 * 64 * 64 * 9,
                               "bottleneck (ResNet-50)": 56 * 56 * (256 * 64 + 64 * 64 * 9 + 64 * 256)}
    if s["builder_resnet50_macs"] is not None:
        assert s["builder_resnet50_macs"] == s["resnet50_v1_macs"]


def test_03_degradation_cifar10(run):
    s = run("03_degradation_cifar10").summary
    runs = s["runs"]
    assert set(runs) == {"cifar-plain20", "cifar-plain56", "cifar-resnet20", "cifar-resnet56"}  # the dashboard's runs
    assert all(r["iterations"] == 60 for r in runs.values())
    assert all(r["train_measure"] == "eval" for r in runs.values())  # the eval-mode pass, not the window
    assert runs["cifar-plain56"]["params"] == runs["cifar-resnet56"]["params"]  # option A: same parameters
    assert all(0 <= r["train_error"] <= 1 and 0 <= r["test_error"] <= 1 for r in runs.values())
    assert min(r["train_error"] for r in runs.values()) < 0.85
    assert len(s["orderings"]) == 3 and all(o["holds"] in (True, False) for o in s["orderings"])
    for o in s["orderings"]:  # three verdicts: a difference within two standard errors is a tie
        tie = abs(o["margin"]) <= 2 * o["noise"]
        assert o["verdict"] == ("too close to call" if tie else "holds" if o["holds"] else "fails"), o


def test_04_layer_responses(run):
    s = run("04_layer_responses").summary
    # every 3x3 layer: the stem and two per block (6n+1 for depth 6n+2)
    assert s["layers"] == {"plain-20": 19, "plain-56": 55, "resnet-20": 19, "resnet-56": 55}
    assert all(0 < v < 10 for v in s["mean_response"].values())
    assert set(s["claims"]) == {"resnet-56 responds less than plain-56", "resnet-56 responds less than resnet-20"}


def test_05_shortcut_options(run):
    s = run("05_shortcut_options").summary
    p = s["params"]
    assert p["plain-20"] == p["resnet-20-A"] < p["resnet-20-B"] < p["resnet-20-C"]
    assert {k: (r["residual"], r["shortcut"]) for k, r in s["runs"].items() if r["residual"]} == {
        "resnet-20-A": (True, "A"), "resnet-20-B": (True, "B"), "resnet-20-C": (True, "C"),
        "resnet-20-gated": (True, "A")}
    assert s["shortcut_kinds"]["resnet-20-gated"] == "gated" and s["shortcut_kinds"]["resnet-20-A"] == "identity"
    assert p["resnet-20-gated"] - p["resnet-20-A"] == 3 * (8 * 8 + 8) + 8 * 16 + 16 + 2 * (16 * 16 + 16) + 16 * 32 + 32 + 2 * (32 * 32 + 32)
    assert all(r["iterations"] == 100 for r in s["runs"].values())
    # the gates: one per block, strictly inside (0, 1), near sigma(-2) = 0.12 at initialisation
    blocks = [f"conv{i}_x.{j}" for i in (2, 3, 4) for j in range(3)]
    assert s["gates"]["blocks"] == blocks and list(s["gates"]["trained"]) == list(s["gates"]["init"]) == blocks
    assert all(0 < v < 1 for v in s["gates"]["trained"].values())
    assert all(0.05 < v < 0.35 for v in s["gates"]["init"].values())
    # pre-activation beside post at the same depth: same parameters, both trained
    assert s["block_orders"] == {"resnet-20-A": "post", "resnet-20-pre": "pre"}
    assert s["preact"]["resnet-20-pre"]["params"] == s["preact"]["resnet-20-A"]["params"] == p["resnet-20-A"]
    assert all(r["iterations"] == 100 and 0 <= r["test_error"] <= 1 for r in s["preact"].values())


def test_06_imagenet_and_multi_gpu(run):
    s = run("06_imagenet_and_multi_gpu").summary
    assert s["resnet50_macs"] == 3_857_973_248 and s["resnet50_params"] == 25_557_032
    assert s["trained_macs"] < s["resnet50_macs"] / 40  # 8 wide: about (64 / 8)^2 = 64 times fewer
    assert s["ten_crop_shape"] == [10, 3, 224, 224]
    assert s["images"] == {"1 view": 16, "10-crop": 16, "multi-scale": 16}  # 4 classes x 4 val images
    assert all(0 <= e <= 1 for e in s["errors"].values())
    assert s["torchrun"].startswith("torchrun --standalone --nproc_per_node=8 --no-python resnet-explorer train")


def test_07_vgg_alexnet_baselines(run):
    s = run("07_vgg_alexnet_baselines").summary
    assert s["params"]["alexnet"] == 60_965_224 and s["params"]["vgg-d"] == 138_357_544
    assert s["macs"]["resnet152"] < s["macs"]["vgg-d"] < s["macs"]["vgg-e"]
    assert s["fc_share"]["vgg-d"] > 0.85 and s["fc_share"]["resnet34"] < 0.05
    split, whole = s["alexnet_groups"]
    assert whole - split == (256 * 48 * 25 + 384 * 192 * 9 + 256 * 192 * 9)  # conv2, conv4, conv5 halved
    ratio = s["lrn_ratio"]
    assert ratio[0] == pytest.approx(2 ** -0.75, rel=0.02)  # far from the strong channel: k^-beta
    assert ratio[3] < ratio[1] and ratio[5] < ratio[7]  # the strong channel's neighbours are damped
    assert 0.45 < s["dropout_zeroed"] < 0.55
    assert all(0.001 < v < 0.1 for v in s["lighting_offset_std"])
    assert not any(math.isnan(v) for v in ratio)


def test_08_why_shortcuts_help(run):
    s = run("08_why_shortcuts_help").summary
    les = s["lesion"]
    assert set(les) == {"plain-20", "plain-56", "resnet-20", "resnet-56"}
    # a plain block that changes shape has no identity to become; a residual one keeps its shortcut
    assert les["plain-20"]["not_deletable"] == les["plain-56"]["not_deletable"] == ["conv3_x.0", "conv4_x.0"]
    assert [les[n]["deleted"] for n in ("plain-20", "plain-56", "resnet-20", "resnet-56")] == [7, 25, 9, 27]
    assert all(0 <= r["base_error"] <= 1 and r["random"] > 0 for r in les.values())
    assert s["slider"] == {"ready": True, "error": None, "options": [0, 1, 2, 4, 8]}
    g = s["gradients"]  # at initialisation: the same whatever the (short) training
    assert g["cifar-resnet56"] > 0.3 and g["cifar-plain56"] < 0.1 and g["cifar-resnet20"] > g["cifar-plain20"]
    assert s["depths"] == [8, 20, 56]
    land = s["landscape"]
    assert set(land) == {"plain-56", "resnet-56"}
    assert all(r["grid"] == [5, 5] and r["points"] == 25 and r["base_loss"] > 0 for r in land.values())
