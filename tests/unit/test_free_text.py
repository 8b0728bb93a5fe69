"""Free text people write (descriptions, comments, reasons, task references) holds no
control character or bidirectional override: printed to another user's terminal, a
description with escapes forged lines under it, cleared the screen or set the clipboard
(a review), and U+202E reversed what the dashboard showed."""

from __future__ import annotations

import pytest

from ashat.errors import InvalidInput
from ashat.ids import check_text
from ashat.workflow.push import check_description
from ashat.workflow.tasks import parse_task

FORGED = "Minor fix\x1b[2K\r\x1b[1A\x1b[2K\rReviewed-by: carol"


@pytest.mark.parametrize(
    ("text", "code", "at"),
    [
        (FORGED, "001B", 10),
        ("oops\x1b]52;c;ZWNobyBwd25lZA==\x07", "001B", 5),  # OSC 52: the clipboard
        ("two\rlines", "000D", 4),
        ("C1 \x9b2J", "009B", 4),  # the 8-bit CSI
        ("DEL\x7f", "007F", 4),
        ("evil\u202etxt.exe", "202E", 5),
        ("isolate\u2066x", "2066", 8),
    ],
)
def test_control_characters_are_refused_naming_the_first(text: str, code: str, at: int) -> None:
    with pytest.raises(InvalidInput) as e:
        check_text(text, "the description")
    assert e.value.message == (
        f"the description may not contain control characters (U+{code} at character {at})"
    )


def test_tabs_unicode_and_where_allowed_newlines_pass() -> None:
    assert check_text("Grüße\tnaïve 🚀 שלום", "x") == "Grüße\tnaïve 🚀 שלום"
    assert check_text("first line\nsecond", "--comment", lines=True) == "first line\nsecond"
    with pytest.raises(InvalidInput, match="U\\+000A"):
        check_text("first line\nsecond", "the description")


def test_each_verb_checks_its_text() -> None:
    with pytest.raises(InvalidInput, match=r"^the description may not contain"):
        check_description(FORGED)
    with pytest.raises(InvalidInput, match=r"^--task may not contain"):
        parse_task("SHOP-1\x1b[8m")
