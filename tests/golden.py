"""Stored expected outputs: volatile parts masked, a diff on mismatch, `pytest --regenerate` rewrites them."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

EXPECTED = Path(__file__).resolve().parent / "expected"


def mask_message(raw: bytes) -> str:
    """A message as text with its Message-ID, Date and MIME boundaries replaced by fixed words."""
    text = raw.decode("utf-8")
    for boundary in set(re.findall(r'boundary="([^"]+)"', text)):
        text = text.replace(boundary, "BOUNDARY")
    text = re.sub(r"(?m)^Message-ID: .*$", "Message-ID: <MASKED>", text)
    return re.sub(r"(?m)^Date: .*$", "Date: MASKED", text)


def compare(name: str, actual: str, regenerate: bool) -> None:
    path = EXPECTED / name
    if regenerate:
        path.write_bytes(actual.encode("utf-8"))
        return
    assert path.exists(), f"{path} is missing: run pytest --regenerate to create it"
    expected = path.read_bytes().decode("utf-8")
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), str(path), "actual"))
        raise AssertionError(f"{name} differs from the stored output (pytest --regenerate to accept):\n{diff}")
