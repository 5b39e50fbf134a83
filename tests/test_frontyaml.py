"""The quick YAML constructor makes exactly what PyYAML's safe loader makes, or the same error."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.frontyaml import load_yaml

from .conftest import FIXTURES

_FRONT = re.compile(r"\A(?:\ufeff)?---[ \t]*\r?\n(.*?\r?\n?)^(?:---|\.\.\.)[ \t]*\r?$", re.DOTALL | re.MULTILINE)


def typed(value):
    """A value with every type spelled out, so 1 == 1.0 == True and a list equal to a tuple do not pass."""
    if isinstance(value, dict):
        return ("dict", [(typed(k), typed(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple, set)):
        items = sorted(value, key=repr) if isinstance(value, set) else value
        return (type(value).__name__, [typed(v) for v in items])
    if isinstance(value, datetime):
        return ("datetime", value.isoformat(), repr(value.tzinfo))
    return (type(value).__name__, repr(value))


def safe_load(text: str):
    return yaml.load(text, Loader=yaml.CSafeLoader)


def outcome(load, text: str):
    try:
        return ("value", typed(load(text)))
    except yaml.YAMLError as err:
        return ("error", type(err).__name__, str(err))


def fixture_front_matters() -> list[str]:
    found = []
    for path in sorted(FIXTURES.rglob("*")):
        if path.suffix in (".md", ".markdown", ".mkd", ".html", ".yml") and path.is_file():
            text = path.read_bytes().decode("utf-8", "replace")
            match = _FRONT.match(text)
            found.append(match.group(1) if match else text)
    return found


CASES = {
    "scalars": "a: 1\nb: 1.5\nc: true\nd: ~\ne: 2025-07-22\nf: 2025-07-22T10:00:00+02:00\ng: 0x1F\nh: .inf\n"
               "i: 'quoted'\nj: \"esc\\u00e9\"\nk: 2025-07-22 10:00:00\nl: 1_000\nm: -.5e3\nn: Yes\no: 0o17\n",
    "nested": "a:\n  b: [1, {c: d}, [e]]\n  f: {g: [h, 2]}\n",
    "non-string keys": "1: a\n2025-07-22: b\ntrue: c\n~: d\n1.5: e\n",
    "duplicate keys": "a: 1\na: 2\n",
    "merge key": "base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n",
    "merge key without alias": "other:\n  <<: {x: 1}\n  y: 2\n",
    "value key": "a:\n  =: 1\n",
    "set": "s: !!set {a, b}\n",
    "ordered map": "o: !!omap [a: 1, b: 2]\n",
    "pairs": "p: !!pairs [a: 1, a: 2]\n",
    "binary": "b: !!binary aGVsbG8=\n",
    "explicit str": "a: !!str 12\nb: !!int '7'\nc: !!float '2'\n",
    "unknown tag": "a: !ruby/object:Foo {x: 1}\n",
    "unhashable key": "? [a, b]\n: c\n",
    "mapping key": "? {a: b}\n: c\n",
    "empty": "",
    "comment only": "# nothing\n",
    "a list": "- a\n- b\n",
    "a scalar": "just text\n",
    "empty values": "a:\nb: ''\nc: []\nd: {}\n",
    "anchors without aliases": "a: &x 1\nb: &y [2]\n",
    "bad indentation": "a: b\n c: d\n",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_values_as_pyyaml(name):
    assert outcome(load_yaml, CASES[name]) == outcome(safe_load, CASES[name])


def test_same_values_as_pyyaml_on_every_fixture_front_matter():
    texts = fixture_front_matters()
    assert len(texts) > 60
    for text in texts:
        if "*" in text or text.count(":") > 60:  # the bounded loader's business (tests/test_reader_hostile.py)
            continue
        try:
            expected = outcome(safe_load, text)
        except (ValueError, TypeError, OverflowError):
            continue  # an impossible value: named by load_yaml, tested in test_reader_hostile.py
        assert outcome(load_yaml, text) == expected, text


def test_the_values_themselves():
    assert load_yaml(CASES["scalars"]) == {
        "a": 1, "b": 1.5, "c": True, "d": None, "e": date(2025, 7, 22),
        "f": datetime(2025, 7, 22, 10, tzinfo=timezone(timedelta(hours=2))), "g": 31, "h": float("inf"),
        "i": "quoted", "j": "esc\u00e9", "k": datetime(2025, 7, 22, 10), "l": 1000, "m": "-.5e3", "n": True,
        "o": "0o17",  # YAML 1.1: 017 is octal, 0o17 and -.5e3 are text
    }
    assert load_yaml(CASES["merge key"])["other"] == {"x": 1, "y": 2}
    assert load_yaml(CASES["set"]) == {"s": {"a", "b"}}


_keys = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=8)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _keys,
                     st.dates(), st.datetimes())
_documents = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(_keys, inner, max_size=4)),
                          max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _documents, max_size=6), st.sampled_from([None, False, True]))
def test_round_trips_through_both_loaders_alike(document, flow):
    text = yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True)
    assert outcome(load_yaml, text) == outcome(safe_load, text)
