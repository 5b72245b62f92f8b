"""errors.one_line: how every module quotes an error in one line."""

from resnet_explorer.errors import SpecError, one_line


def test_one_line_is_the_first_line_cut_to_its_limit():
    assert one_line(ValueError("  first\nsecond\n")) == "first"
    assert one_line(KeyError()) == "KeyError"  # no message: the type's name
    assert one_line(RuntimeError("\n\n")) == "RuntimeError"
    long = one_line(SpecError("x" * 500), limit=120)
    assert len(long) == 120 and long.endswith("…") and long.startswith("x" * 119)
    assert one_line(SpecError("y" * 500), limit=None) == "y" * 500
    assert len(one_line(OSError("z" * 500))) == 160  # the default limit
