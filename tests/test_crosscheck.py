"""The design card's tools in the product: `info --summary` (torchinfo) and the fvcore
cross-check of our multiply-adds (`info --check`, `crosscheck.check_count`, the builder's
button), for every zoo net family."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from resnet_explorer import crosscheck, get_spec
from resnet_explorer.cli import main
from resnet_explorer.count import count

# one net of each family of the zoo (ImageNet inputs shrunk where the family allows it, to keep this fast)
FAMILIES = {
    "resnet (basic)": ("resnet18", {"input_size": 64}),
    "resnet (bottleneck, v1.5, option C)": ("resnet50", {"input_size": 64, "stride_at": "3x3", "shortcut": "C"}),
    "plain": ("plain34", {"input_size": 64}),
    "cifar resnet (option A)": ("cifar-resnet20", {}),
    "cifar plain": ("cifar-plain20", {}),
    "vgg": ("vgg-a", {"input_size": 64}),
    "alexnet (two groups, LRN)": ("alexnet", {}),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_fvcore_agrees_with_our_count_for_every_family(family):
    name, overrides = FAMILIES[family]
    spec = get_spec(name, **overrides)
    checked = crosscheck.check_count(spec)
    assert checked.ours == count(spec).macs and checked.fvcore == checked.ours
    assert checked.agrees is True and checked.differing == []
    assert checked.line() == f"fvcore agrees: {checked.ours:,} multiply-adds traced, {checked.ours:,} counted"


@pytest.mark.parametrize("family", FAMILIES)
def test_the_torchinfo_summary_of_every_family_has_our_totals(family):
    name, overrides = FAMILIES[family]
    spec = get_spec(name, **overrides)
    text = crosscheck.summary(spec)
    c = count(spec)
    assert f"Total params: {c.params:,}" in text
    assert re.search(r"Total mult-adds \([MG]\): [\d.]+", text)  # torchinfo's own convention (biases, BN too)
    assert "conv2_x" in text or "features" in text or "conv1" in text  # rows named like our modules


def test_info_summary_and_check_on_the_command_line(capsys):
    assert main(["info", "cifar-resnet20", "--summary", "--check"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 269,722" in out and "Conv2d (conv1)" in out
    assert out.rstrip().splitlines()[-1] == "fvcore agrees: 40,551,040 multiply-adds traced, 40,551,040 counted"
    assert main(["info", "cifar-resnet20", "--check", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["macs"] == d["fvcore_macs"] == 40_551_040 and d["fvcore_agrees"] is True


def test_a_disagreement_names_the_layers_and_fails_the_command(monkeypatch, capsys):
    real = crosscheck.count

    def off_by_one(spec):  # a counter bug in one layer
        c = real(spec)
        c.rows = [replace(r, macs=r.macs + 1) if r.name == "conv3_x.0.conv1" else r for r in c.rows]
        return c

    monkeypatch.setattr(crosscheck, "count", off_by_one)
    checked = crosscheck.check_count(get_spec("cifar-resnet20"))
    assert checked.agrees is False and checked.differing == ["conv3_x.0.conv1"]
    assert checked.line() == ("fvcore DISAGREES: 40,551,040 multiply-adds traced, 40,551,041 counted "
                              "(layers: conv3_x.0.conv1)")
    assert main(["info", "cifar-resnet20", "--check"]) == 1
    assert capsys.readouterr().out.rstrip().endswith("(layers: conv3_x.0.conv1)")


def test_without_fvcore_or_torchinfo_it_is_one_line_saying_how_to_install(monkeypatch, capsys):
    real = crosscheck.importlib.util.find_spec
    monkeypatch.setattr(crosscheck.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("fvcore", "torchinfo") else real(name, *a))
    checked = crosscheck.check_count(get_spec("cifar-resnet20"))
    assert checked.fvcore is None and checked.agrees is None
    assert checked.line() == ('fvcore is not installed, so the count is not cross-checked: '
                              'pip install "resnet-explorer[check]"')
    assert main(["info", "cifar-resnet20", "--summary"]) == 2
    assert capsys.readouterr().err == ('resnet-explorer: error: --summary needs torchinfo, which is not installed: '
                                       'pip install "resnet-explorer[check]"\n')


def test_the_builder_shows_fvcore_agrees_until_the_net_changes():
    from resnet_explorer.widgets import ArchitectureBuilder

    b = ArchitectureBuilder("cifar-resnet20")
    assert b.check_line.value == ""
    b.check_button.click()
    assert b.check_line.value == "fvcore agrees: 40,551,040 multiply-adds traced, 40,551,040 counted"
    b.residual.value = False  # an edit: the verdict was about the old net
    assert b.check_line.value == ""
    assert b.check().startswith("fvcore agrees: 40,551,040")
