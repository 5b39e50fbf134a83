"""Subscribers: CSV import (every bad row reported, nothing partial), export round trip, status rules."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter import subscribers as subs
from newsletter.store import open_store
from newsletter.subscribers import ImportRejected, export_csv, find, import_csv, iter_subscribers

from .conftest import FIXED_NOW, FIXTURES, ROOT

BAD = FIXTURES / "subscribers" / "bad-rows.csv"


def load(env, text: str, **options):
    return import_csv(env.store, env.config, io.StringIO(text), "list.csv", FIXED_NOW, **options)


def everyone(env) -> dict[str, tuple[str, str, dict]]:
    return {s.email: (s.name, s.status, s.newsletters) for s in iter_subscribers(env.store)}


def test_every_bad_row_is_reported_with_its_line_and_nothing_is_imported(env):
    with pytest.raises(ImportRejected) as caught:
        load(env, BAD.read_text())
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (3, "'not-an-address' is not a valid address: An email address must have an @-sign."),
        (4, "duplicate of line 2 (GOOD.ONE@example.org)"),
        (5, "category 'Culture' is not one of newsletter 'lab''s categories (Technology, Science)"),
        (6, "the name field contains a line break"),
        (8, "has 2 fields; the header has 5"),
        (9, "has 6 fields; the header has 5"),
        (10, "unknown newsletter 'daily' (known: lab, weekly)"),
        (11, "status 'sleeping' must be one of active, unsubscribed, bounced, complained"),
        (12, "category 'Travel' is not one of newsletter 'lab''s categories (Technology, Science)"),
    ]
    assert str(caught.value) == "9 invalid row(s); nothing was imported (--skip-invalid imports the rest)"
    assert everyone(env) == {}


def test_skip_invalid_imports_every_valid_row(env):
    report = load(env, BAD.read_text(), skip_invalid=True)
    assert (report.added, report.updated, len(report.invalid)) == (3, 0, 9)
    assert everyone(env) == {
        "good.one@example.org": ("Good One", "active", {"weekly": ()}),
        "good.two@example.org": ("Good Two", "active", {"lab": ("Technology", "Science")}),
        "left@example.org": ("Already Left", "unsubscribed", {"weekly": ()}),
    }


def test_import_is_idempotent_and_updates_in_place(env):
    text = "email,name,newsletters,categories\nana@example.org,Ana,weekly;lab,lab:Science\n"
    first = load(env, text)
    second = load(env, text)
    assert (first.added, second.added, second.updated, second.unchanged) == (1, 0, 0, 1)
    third = load(env, "email,name,newsletters,categories\nANA@example.org,Ana Souza,lab,\n")
    assert (third.updated, third.unchanged) == (1, 0)
    assert everyone(env) == {"ana@example.org": ("Ana Souza", "active", {"lab": (), "weekly": ()})}


def test_nobody_who_left_is_resubscribed_without_the_operators_word(env):
    for status in ("unsubscribed", "bounced", "complained"):
        load(env, f"email,newsletters,status\n{status}@example.org,weekly,{status}\n")
    report = load(env, "email,newsletters\nunsubscribed@example.org,weekly\nbounced@example.org,weekly\n"
                       "complained@example.org,weekly\n")
    assert report.kept_unsubscribed == ["unsubscribed@example.org", "bounced@example.org", "complained@example.org"]
    assert {e: s for e, (_, s, _) in everyone(env).items()} == {
        "unsubscribed@example.org": "unsubscribed", "bounced@example.org": "bounced",
        "complained@example.org": "complained"}
    load(env, "email,newsletters\nbounced@example.org,weekly\n", resubscribe=True)
    assert everyone(env)["bounced@example.org"][1] == "active"


def test_newsletter_option_fills_empty_cells_and_any_category_is_accepted_when_none_are_listed(env):
    report = load(env, "email,categories\nx@example.org,Astrology\ny@example.org,\n", newsletter="weekly")
    assert report.added == 2
    assert everyone(env)["x@example.org"][2] == {"weekly": ("Astrology",)}


def test_addresses_are_normalised_and_unique_whatever_their_case(env):
    load(env, "email,newsletters\nMixed.Case@EXAMPLE.ORG,weekly\n")
    assert list(everyone(env)) == ["Mixed.Case@example.org"]
    assert find(env.store, "mixed.case@example.org").email == "Mixed.Case@example.org"
    report = load(env, "email,newsletters\nMIXED.CASE@example.org,lab\n")
    assert (report.added, report.updated) == (0, 1)


def test_header_problems_are_reported_before_any_row(env):
    with pytest.raises(ImportRejected) as caught:
        load(env, "mail,nom\nx@example.org,X\n")
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (1, "unknown column 'mail' (columns: email, name, newsletters, categories, status, signed_up_at, signup_ip)"),
        (1, "unknown column 'nom' (columns: email, name, newsletters, categories, status, signed_up_at, signup_ip)"),
        (1, "no email column; the first row must name the columns"),
    ]


def test_export_then_import_into_an_empty_store_gives_the_same_subscribers(env, tmp_path):
    load(env, (ROOT / "subscribers" / "sample.csv").read_text())
    out = io.StringIO()
    assert export_csv(env.store, out) == 12
    fresh = SimpleNamespace(**{**vars(env), "store": open_store(f"sqlite:///{tmp_path}/fresh.db")})
    load(fresh, out.getvalue())
    assert everyone(fresh) == everyone(env)
    again = io.StringIO()
    export_csv(fresh.store, again)
    assert again.getvalue() == out.getvalue()
    assert out.getvalue().splitlines()[:3] == [
        "email,name,newsletters,categories,status,signed_up_at,signup_ip",
        "ana.souza@example.org,Ana Souza,lab;weekly,,active,,",
        "ben.okafor@example.org,Ben Okafor,weekly,weekly:Culture;weekly:Travel,active,,",
    ]


names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20).map(str.strip)
rows = st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9.]{0,10}[a-z0-9]", fullmatch=True), names,
                          st.sampled_from(["weekly", "lab", "weekly;lab"]),
                          st.sampled_from(["", "Science", "lab:Technology", "lab:Science;lab:Technology"]),
                          st.sampled_from(subs.STATUSES)), max_size=15, unique_by=lambda r: r[0])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows)
def test_any_valid_list_round_trips_through_export_and_import(rows, tmp_path_factory, sample_config):
    folder = tmp_path_factory.mktemp("roundtrip")
    first = open_store(f"sqlite:///{folder}/a.db")
    second = open_store(f"sqlite:///{folder}/b.db")
    text = subs_csv([("email", "name", "newsletters", "categories", "status")] + [
        (f"{user}@example.org", name, newsletters, categories if "lab" in newsletters or ":" not in categories
         else "", status) for user, name, newsletters, categories, status in rows])
    config = sample_config
    import_csv(first, config, io.StringIO(text), "x.csv", FIXED_NOW, skip_invalid=True)
    exported = io.StringIO()
    export_csv(first, exported)
    import_csv(second, config, io.StringIO(exported.getvalue()), "y.csv", FIXED_NOW)
    again = io.StringIO()
    export_csv(second, again)
    assert again.getvalue() == exported.getvalue()
    for store in (first, second):
        store.engine.dispose()


def subs_csv(rows) -> str:
    import csv

    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def test_add_remove_and_status_filters(env):
    subs.add(env.store, env.config, "dev@example.org", "Dev", ("lab",), ("Technology",), FIXED_NOW)
    subs.add(env.store, env.config, "eve@example.org", "", ("weekly",), (), FIXED_NOW)
    subs.set_status(env.store, "EVE@example.org", "unsubscribed", FIXED_NOW)
    assert [s.email for s in iter_subscribers(env.store, status="active")] == ["dev@example.org"]
    assert [s.email for s in iter_subscribers(env.store, newsletter="weekly")] == ["eve@example.org"]
    assert [s.email for s in iter_subscribers(env.store, category="technology")] == ["dev@example.org",
                                                                                      "eve@example.org"]
    assert [s.email for s in iter_subscribers(env.store, category="Science")] == ["eve@example.org"]
    with pytest.raises(subs.NewsletterError, match="cannot add 'bad': 'bad' is not a valid address"):
        subs.add(env.store, env.config, "bad", "", ("weekly",), (), FIXED_NOW)
