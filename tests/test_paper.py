"""The papers' numbers: each belongs to exactly one net and variant, carries its table and source,
and is shown only for that net, or labelled as a reference (the builder, `info`, the tables)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from resnet_explorer import count, get_spec
from resnet_explorer.paper import (ALEXNET, CIFAR10, MACS, PAPER, PARAMS, PREACT, RESNET, TOP1, TOP5, VGG, figure,
                                   figures_for)
from resnet_explorer.tables import baselines, format_info, table3
from resnet_explorer.widgets import PRESETS, ArchitectureBuilder
from resnet_explorer.widgets.controls import FAMILIES

PAPER_MD = SHARED_DATA.parent / "PAPER.md"


class Figures(HTMLParser):
    """The elements of class rx-paper in a widget's HTML: their data attributes and their text."""

    def __init__(self, text: str):
        super().__init__()
        self.found: list[dict] = []
        self._open: list[tuple[str, dict | None]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "rx-paper" in (a.get("class") or "").split():
            a["text"] = ""
            self.found.append(a)
            self._open.append((tag, a))
        else:
            self._open.append((tag, None))

    def handle_endtag(self, tag):
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data):
        for _, a in self._open:
            if a is not None:
                a["text"] += data


def _key(spec) -> str:
    from resnet_explorer.paper import _key as key  # the one definition of "the same net"

    return key(spec)


def check_shown(spec, text: str) -> list[dict]:
    """Every paper figure in ``text`` is in `PAPER` with its table and source, and is either
    exactly this net's (same net, same variant) or marked and worded as a reference."""
    shown = Figures(text).found
    for a in shown:
        variant = json.loads(a["data-variant"])
        f = next((f for f in PAPER if (f.net, dict(f.variant), f.quantity, f.table, f.source)
                  == (a["data-net"], variant, a["data-quantity"], a["data-table"], a["data-source"])), None)
        assert f is not None, a  # the figure is the data's, with its table and source
        assert float(a["data-value"]) == f.value and f.table and f.source, a
        if a["data-exact"] == "1":
            assert not f.other_net and _key(get_spec(f.net, **variant)) == _key(spec), (spec.name, a)
            assert "rx-reference" not in a["class"] and a["text"].startswith("paper, " + f.label), a
        else:
            assert "rx-reference" in a["class"] and f.label in a["text"], a
            if a["text"].startswith("reference"):  # the list under the diagram says how it differs
                assert "not this net" in a["text"], a
    return shown


def _builder_states(b: ArchitectureBuilder):
    """Every preset, and from each every value of every family control the builder enables."""
    controls = (("residual", b.residual), ("shortcut", b.shortcut), ("stride_at", b.stride_at),
                ("shortcut_kind", b.shortcut_kind), ("block_order", b.block_order))
    for preset in PRESETS:
        b.set_preset(preset)
        yield preset
        for field, w in controls:
            if w.disabled:
                continue
            for _, value in w.options:
                if value != w.value:
                    b.set_preset(preset)
                    w.value = value
                    yield f"{preset} {field}={value}"


def test_every_paper_figure_the_builder_shows_belongs_to_the_net_or_says_it_is_a_reference():
    b = ArchitectureBuilder()
    states = 0
    for state in _builder_states(b):
        if b.error:  # an edit the builder refused is shown as a message, no numbers to check
            continue
        states += 1
        spec = b.spec
        exact = [a for a in check_shown(spec, b.paper.value) if a["data-exact"] == "1"]
        check_shown(spec, b.comparison.value)
        # what figures_for gives is all that is shown: none left out, none added
        assert len(Figures(b.paper.value).found) == len(figures_for(spec)), state
        assert len(exact) == sum(s.exact for s in figures_for(spec)), state
    assert states > 100  # every preset (36), and every other value of each control it enables


@pytest.mark.parametrize("option,top1,top5", [("A", "25.03", "7.76"), ("B", "24.52", "7.46"), ("C", "24.19", "7.40")])
def test_resnet34_shows_its_own_options_numbers(option, top1, top5):
    b = ArchitectureBuilder("resnet34")
    b.shortcut.value = option
    text = b.paper.value
    assert f"paper</b>, ResNet-34, option {option}: top-1 error {top1} %" in text
    assert f"top-5 error {top5} %" in text
    for other in {"25.03", "24.52", "24.19"} - {top1}:
        assert other not in text  # never another option's error
    assert "params" not in text and "21.80" not in text and "21,797,672" not in text  # no paper prints it
    assert ("Tables 2, 3, " if option == "A" else "Table 3, ") + RESNET in text
    if option != "A":  # Table 1's 3.6 G counts no projection: option A's, shown as a reference
        assert re.search(r"<b>reference</b> \(not this net: option [BC], not A\), <b>ResNet-34, option A</b>: "
                         r"3.6 G multiply-adds", text)


def test_option_c_of_resnet101_is_labelled_a_reference_not_a_counter_bug():
    b = ArchitectureBuilder("resnet101")
    b.shortcut.value = "C"
    shown = Figures(b.paper.value).found
    assert shown and all(a["data-exact"] == "0" for a in shown)
    assert all("not this net: option C, not B" in a["text"] for a in shown)
    assert "44.55" not in b.paper.value and "params" not in b.paper.value


def test_a_narrow_cifar_net_gets_table6_as_a_reference():
    spec = get_spec("cifar-resnet20", width=4)
    (params, error) = figures_for(spec)
    assert not params.exact and not error.exact and params.differs == "4 wide, not 16"
    assert error.figure.value == 8.75 and error.figure.table == "Table 6"
    assert [s.exact for s in figures_for(get_spec("cifar-resnet20"))] == [True, True]
    assert figures_for(get_spec("cifar-plain20")) == []  # Fig. 6 only: no number to show


def test_info_and_the_tables_label_references():
    spec = get_spec("resnet34")  # option B
    text = format_info(count(spec), spec)
    assert "  paper: top-1 error 24.52 % (Table 3, " in text
    assert "paper, for ResNet-34, option A (a reference: this net has option B, not A): 3.6 G multiply-adds" in text
    assert "25.03" not in text
    rows = {line.split()[0]: line for line in baselines().splitlines()[2:-1]}
    assert "27.88*" in rows["resnet18"] and "ResNet Table 2 (*ResNet-18, option A)" in rows["resnet18"]
    assert "24.52" in rows["resnet34"] and "*" not in rows["resnet34"].split("ResNet")[0].replace("3.6*", "")
    t3 = table3()
    assert "ResNet-34 B" in t3 and "24.52" in t3 and "24.19" in t3


def test_exact_lookup():
    assert figure("resnet34", TOP1, shortcut="B").value == 24.52
    assert figure("resnet34", TOP1, shortcut="A").table == "Tables 2, 3"
    with pytest.raises(KeyError, match="no paper prints the params of resnet34"):
        figure("resnet34", PARAMS)
    with pytest.raises(KeyError):  # Table 1's FLOPs are option A's for the 34-layer net
        figure("resnet34", MACS, shortcut="B")
    assert figure("plain34", MACS, shortcut="C").value == 3.6e9  # a plain net has no shortcut option
    assert figure("cifar-resnet110", CIFAR10, source=PREACT).value == 6.61


def test_each_figure_of_the_three_papers_is_in_paper_md():
    """The ResNet, VGG and AlexNet figures against the project's transcription of the papers;
    the 2016 paper's are not in it (checked by the counts they state, in test_highway_preact)."""
    if not PAPER_MD.is_file():
        pytest.fail(f"{PAPER_MD} is missing: set RESNET_EXPLORER_SHARED_DATA to the shared data folder")
    text = PAPER_MD.read_text(encoding="utf-8")
    checked = 0
    for f in PAPER:
        assert f.source in (RESNET, VGG, ALEXNET, PREACT) and f.table and f.quantity in (MACS, PARAMS, TOP1, TOP5,
                                                                                          CIFAR10)
        if f.source == PREACT or f.other_net:  # the 2016 paper, Table 6's highway rows: not transcribed
            continue
        number = f.printed.replace("·10⁹", "").rstrip("M")
        assert re.search(rf"(?<![\d.]){re.escape(number)}(?![\d])", text), f
        checked += 1
    assert checked == 46
    # the cases a student met (ResNet-34 option B, option C), by their lines in PAPER.md
    assert "ResNet-34 A 25.03/7.76, B 24.52/7.46, C 24.19/7.40" in text
    assert "21.80" not in text  # PAPER.md prints no such count: nor do we, as the paper's
