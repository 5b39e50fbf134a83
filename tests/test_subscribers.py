"""Subscribers: CSV import (every bad row reported, nothing partial), export round trip, status rules."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter import subscribers as subs
from newsletter.store import open_store
from newsletter.subscribers import COLUMNS, ImportRejected, export_csv, find, import_csv, iter_subscribers

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
        (6, "the name field contains a line break; remove it"),
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


def test_newsletter_option_fills_empty_cells(env):
    report = load(env, "email,categories\nx@example.org,science\ny@example.org,\n", newsletter="weekly")
    assert report.added == 2
    assert everyone(env)["x@example.org"][2] == {"weekly": ("Science",)}
    assert everyone(env)["y@example.org"][2] == {"weekly": ()}


def test_a_newsletter_of_every_category_takes_only_categories_the_site_has(env):
    """Nobody is signed up for a category no post has: every issue would skip them."""
    with pytest.raises(ImportRejected) as caught:
        load(env, "email,newsletters,categories\nx@example.org,weekly,Astrology\ny@example.org,weekly;lab,"
                  "weekly:Travel;lab:Science\nz@example.org,weekly,TRAVEL;culture\n")
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (2, "category 'Astrology' is not a category of any post on the site (categories: Culture, Science, "
            "Technology, Travel); newsletter 'weekly' carries every category, so only those can be chosen"),
    ]
    report = load(env, "email,newsletters,categories\ny@example.org,weekly;lab,weekly:Travel;lab:Science\n"
                       "z@example.org,weekly,TRAVEL;culture\n")
    assert report.added == 2
    assert everyone(env)["z@example.org"][2] == {"weekly": ("Travel", "Culture")}
    assert everyone(env)["y@example.org"][2] == {"lab": ("Science",), "weekly": ("Travel",)}
    with pytest.raises(subs.NewsletterError, match=r"cannot add 'w@example.org': category 'Astrology' is not a "
                                                   r"category of any post on the site"):
        subs.add(env.store, env.config, "w@example.org", "", ("weekly",), ("Astrology",), FIXED_NOW)


def test_the_site_categories_can_be_given_and_are_only_read_when_needed(env):
    report = load(env, "email,newsletters,categories\nx@example.org,weekly,Astrology\n",
                  site_categories=["astrology", "Tides"])
    assert report.added == 1 and everyone(env)["x@example.org"][2] == {"weekly": ("astrology",)}
    asked = []
    checker = subs.RowChecker(env.config, site_categories=lambda: asked.append(1) or ["Science"])
    assert isinstance(checker.check(2, {"email": "a@example.org", "newsletters": "lab", "categories": "science"}),
                      subs.Row)
    assert asked == []
    for line in (3, 4):
        checker.check(line, {"email": f"{line}@example.org", "newsletters": "weekly", "categories": "science"})
    assert asked == [1]


def test_a_column_named_twice_is_an_invalid_header(env):
    with pytest.raises(ImportRejected) as caught:
        load(env, "email,name,Name,newsletters\nx@example.org,X,Y,weekly\n")
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (1, "column 'name' is in the header twice (columns 2 and 3); keep one")]
    assert everyone(env) == {}


@pytest.mark.parametrize(("value", "reason"), [
    ("Ana\x00Souza", "a control character (U+0000)"),
    ("Ana\tSouza", "a control character (U+0009)"),
    ("Ana\x1b[31mSouza", "a control character (U+001B)"),
    ("Ana\x85Souza", "a control character (U+0085)"),
    ("Ana\u2028Souza", "a control character (U+2028)"),
    ("Ana\rSouza", "a line break"),
])
def test_control_characters_in_a_name_refuse_the_row(env, value, reason):
    with pytest.raises(ImportRejected) as caught:
        load(env, f'email,name,newsletters\ngood@example.org,Good,weekly\nana@example.org,"{value}",weekly\n')
    assert [(p.line, p.message) for p in caught.value.problems] == [(3, f"the name field contains {reason}; "
                                                                        "remove it")]


def test_overlong_names_and_fields_are_invalid_rows(env):
    huge = "x" * 200_000
    with pytest.raises(ImportRejected) as caught:
        load(env, f"email,name,newsletters\nlong@example.org,{'n' * 201},weekly\nhuge@example.org,{huge},weekly\n"
                  f"fine@example.org,{'n' * 200},weekly\n")
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (2, "the name is 201 characters long; at most 200 are kept"),
        (3, "cannot be read as CSV: a field is longer than 131072 characters, far more than any subscriber "
            "field; is this the right file?"),
    ]
    report = load(env, f"email,name,newsletters\nlong@example.org,{'n' * 201},weekly\nfine@example.org,"
                       f"{'n' * 200},weekly\n", skip_invalid=True)
    assert report.added == 1 and everyone(env)["fine@example.org"][0] == "n" * 200


def test_excel_safe_export_quotes_names_a_spreadsheet_would_run(env):
    load(env, "email,name,newsletters\na@example.org,=HYPERLINK(\"http://x.example\"),weekly\n"
              "b@example.org,+1 555,weekly\nc@example.org,-Dash,weekly\nd@example.org,@Handle,weekly\n"
              "e@example.org,Plain = Name,weekly\n-f@example.org,F,weekly\n")
    exact, safe = io.StringIO(), io.StringIO()
    export_csv(env.store, exact)
    export_csv(env.store, safe, excel_safe_names=True)
    assert safe.getvalue().splitlines()[1:] == [
        "a@example.org,\"'=HYPERLINK(\"\"http://x.example\"\")\",weekly,,active,,",
        "b@example.org,'+1 555,weekly,,active,,",
        "c@example.org,'-Dash,weekly,,active,,",
        "d@example.org,'@Handle,weekly,,active,,",
        "e@example.org,Plain = Name,weekly,,active,,",
        "-f@example.org,F,weekly,,active,,",
    ]
    assert exact.getvalue().splitlines()[1:4] == [
        "a@example.org,\"=HYPERLINK(\"\"http://x.example\"\")\",weekly,,active,,",
        "b@example.org,+1 555,weekly,,active,,",
        "c@example.org,-Dash,weekly,,active,,",
    ]


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


SITE_CATEGORIES = ("Culture", "Science", "Technology", "Travel")
LAB_CATEGORIES = ("Technology", "Science")
names = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=20)
categories = st.lists(st.sampled_from(["Science", "science", "TECHNOLOGY", "lab:Technology", "lab:science",
                                       "weekly:Travel", "weekly:culture"]), max_size=3)
rows = st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9.]{0,10}[a-z0-9]", fullmatch=True),
                          st.sampled_from(["example.org", "EXAMPLE.org", "Example.Org"]), names,
                          st.sampled_from(["weekly", "lab", "weekly;lab", " lab ; weekly "]), categories,
                          st.sampled_from([*subs.STATUSES, "", "Active", " BOUNCED "])),
                max_size=15, unique_by=lambda r: r[0])


def csv_rows(generated) -> list[tuple[str, ...]]:
    """The generated rows as CSV cells, keeping only the categories valid for the row's newsletters."""
    out = []
    for user, domain, name, newsletters, chosen, status in generated:
        ids = {n.strip() for n in newsletters.split(";")}
        valid = [c for c in chosen if c.partition(":")[0] in ids or ":" not in c]
        if "weekly" not in ids or "lab" in ids:  # a bare category must suit every listed newsletter
            valid = [c for c in valid if ":" in c or c.casefold() in ("science", "technology")]
        out.append((f"{user}@{domain}", name, newsletters, ";".join(valid), status))
    return out


def expected_subscribers(cells) -> dict[str, tuple[str, str, dict]]:
    """What the importer documents it stores for valid rows: the address with its domain in lower case,
    the name without surrounding spaces, the status in lower case (empty: active), and for each listed
    newsletter its categories, a bare one going to every newsletter, spelled as the newsletter (or, for one
    carrying every category, the site) spells them, each once, in the order given."""
    expected = {}
    for address, name, newsletters, chosen, status in cells:
        user, _, domain = address.partition("@")
        held = {n.strip(): [] for n in newsletters.split(";")}
        for item in filter(None, chosen.split(";")):
            target, _, category = item.rpartition(":")
            for newsletter in [target] if target else list(held):
                offered = LAB_CATEGORIES if newsletter == "lab" else SITE_CATEGORIES
                spelled = next(c for c in offered if c.casefold() == category.casefold())
                if spelled not in held[newsletter]:
                    held[newsletter].append(spelled)
        expected[f"{user}@{domain.lower()}"] = (name.strip(), status.strip().lower() or "active",
                                                {n: tuple(c) for n, c in held.items()})
    return expected


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(generated=rows)
def test_any_valid_list_imports_as_written_and_round_trips_through_export(generated, tmp_path_factory,
                                                                           sample_config):
    folder = tmp_path_factory.mktemp("roundtrip")
    first = open_store(f"sqlite:///{folder}/a.db")
    second = open_store(f"sqlite:///{folder}/b.db")
    cells = csv_rows(generated)
    text = subs_csv([COLUMNS[:5]] + cells)  # the columns before the consent evidence
    config = sample_config
    report = import_csv(first, config, io.StringIO(text), "x.csv", FIXED_NOW, site_categories=SITE_CATEGORIES)
    assert (report.added, report.invalid) == (len(cells), [])
    assert {s.email: (s.name, s.status, s.newsletters) for s in iter_subscribers(first)} == \
        expected_subscribers(cells)
    exported = io.StringIO()
    export_csv(first, exported)
    import_csv(second, config, io.StringIO(exported.getvalue()), "y.csv", FIXED_NOW,
               site_categories=SITE_CATEGORIES)
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


def test_the_quick_control_character_search_covers_every_character_the_slow_check_refuses():
    import sys
    import unicodedata

    refused = {chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) in ("Cc", "Zl", "Zp")}
    found = {chr(c) for c in range(sys.maxunicode + 1) if subs.UNWANTED.match(chr(c))}
    assert found == refused
    assert subs._unwanted_character("Ana\u2028Souza") == "a control character (U+2028)"


CONSENT_CSV = ("email,newsletters,status,signed_up_at,signup_ip\n"
               "ana@example.org,weekly,active,2025-03-01T09:30:00+00:00,192.0.2.7\n"
               "ben@example.org,lab,bounced,2025-03-02T10:00:00+01:00,2001:DB8:0:0::1\n"
               "cy@example.org,weekly,active,,\n"
               "dee@example.org,weekly,active,2025-03-04T08:00:00Z,\n")


def exported(env) -> list[str]:
    out = io.StringIO()
    export_csv(env.store, out)
    return out.getvalue().splitlines()


def test_consent_columns_are_imported_and_exported_as_they_were(env, tmp_path):
    report = load(env, CONSENT_CSV)
    assert report.added == 4
    written = exported(env)
    assert written == [
        "email,name,newsletters,categories,status,signed_up_at,signup_ip",
        "ana@example.org,,weekly,,active,2025-03-01T09:30:00+00:00,192.0.2.7",
        "ben@example.org,,lab,,bounced,2025-03-02T09:00:00+00:00,2001:db8::1",
        "cy@example.org,,weekly,,active,,",
        "dee@example.org,,weekly,,active,2025-03-04T08:00:00+00:00,",
    ]
    from newsletter import signup

    ana = signup.of_address(env.store, "ana@example.org")
    assert [(s.created_at, s.ip, s.confirmed_at, s.newsletters) for s in ana] == [
        (datetime(2025, 3, 1, 9, 30, tzinfo=timezone.utc), "192.0.2.7", datetime(2025, 3, 1, 9, 30, tzinfo=timezone.utc),
         {"weekly": ()})]
    fresh = SimpleNamespace(**{**vars(env), "store": open_store(f"sqlite:///{tmp_path}/fresh.db")})
    load(fresh, "\n".join(written) + "\n")
    assert exported(fresh) == written


def test_importing_the_same_consent_again_changes_nothing_and_new_evidence_is_added(env):
    load(env, CONSENT_CSV)
    again = load(env, CONSENT_CSV)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 4)
    later = CONSENT_CSV.replace("2025-03-01T09:30:00+00:00,192.0.2.7", "2025-06-01T09:30:00+00:00,192.0.2.8")
    report = load(env, later)
    assert (report.updated, report.unchanged) == (1, 3)
    assert exported(env)[1] == "ana@example.org,,weekly,,active,2025-06-01T09:30:00+00:00,192.0.2.8"
    from newsletter import signup

    assert [s.ip for s in signup.of_address(env.store, "ana@example.org")] == ["192.0.2.7", "192.0.2.8"]


def test_a_bad_consent_cell_is_an_invalid_row_naming_its_column_and_the_rest_imports(env):
    text = ("email,newsletters,signed_up_at,signup_ip\n"
            "ana@example.org,weekly,2025-03-01T09:30:00+00:00,192.0.2.7\n"
            "ben@example.org,weekly,yesterday,192.0.2.8\n"
            "cy@example.org,weekly,2025-03-01 09:30,192.0.2.9\n"
            "dee@example.org,weekly,2025-03-01T09:30:00+00:00,192.0.2.300\n"
            "eve@example.org,weekly,,192.0.2.10\n"
            "fay@example.org,weekly,2026-01-05T07:00:01+00:00,\n"
            "gus@example.org,weekly,2026-01-05T07:00:00+00:00,::1\n")
    with pytest.raises(ImportRejected) as caught:
        load(env, text)
    expected = [
        (3, "the signed_up_at column holds 'yesterday', which is not an ISO 8601 time such as "
            "2026-01-05T07:00:00+00:00"),
        (4, "the signed_up_at column holds '2025-03-01 09:30' without a UTC offset; add one, such as +00:00"),
        (5, "the signup_ip column holds '192.0.2.300', which is not an IPv4 or IPv6 address"),
        (6, "the signup_ip column holds '192.0.2.10' but signed_up_at is empty; give the time of that sign-up too"),
        (7, "the signed_up_at column holds '2026-01-05T07:00:01+00:00', later than the import "
            "(2026-01-05T07:00:00+00:00)"),
    ]
    assert [(p.line, p.message) for p in caught.value.problems] == expected
    assert everyone(env) == {}
    report = load(env, text, skip_invalid=True)
    assert [(p.line, p.message) for p in report.invalid] == expected
    assert sorted(everyone(env)) == ["ana@example.org", "gus@example.org"]
    assert exported(env)[1:] == ["ana@example.org,,weekly,,active,2025-03-01T09:30:00+00:00,192.0.2.7",
                                 "gus@example.org,,weekly,,active,2026-01-05T07:00:00+00:00,::1"]


def test_remove_ends_every_subscription_with_a_departure_on_record(env):
    from newsletter import preferences

    load(env, "email,newsletters,categories,status\n"
              "ana@example.org,weekly;lab,lab:Science,active\n"
              "bo@example.org,weekly,,bounced\n"
              "cy@example.org,lab,,active\n")
    later = FIXED_NOW + timedelta(days=1)
    removed = subs.remove(env.store, "ANA@example.org", later)
    assert (removed.status, removed.newsletters) == ("unsubscribed", {})
    ana = find(env.store, "ana@example.org").id
    assert preferences.departures(env.store, ana) == [preferences.Departure("lab", later, "operator", None),
                                                      preferences.Departure("weekly", later, "operator", None)]
    bounced = subs.remove(env.store, "bo@example.org", later)
    assert (bounced.status, bounced.newsletters) == ("bounced", {})
    assert [d.how for d in preferences.departures(env.store, bounced.id)] == ["operator"]
    assert exported(env)[1:3] == ["ana@example.org,,lab;weekly,,unsubscribed,,", "bo@example.org,,weekly,,bounced,,"]
    report = load(env, "email,newsletters,status\nana@example.org,weekly,unsubscribed\n")
    assert (report.kept_unsubscribed, everyone(env)["ana@example.org"]) == (
        ["ana@example.org (weekly)"], ("", "unsubscribed", {}))
    with pytest.raises(subs.NewsletterError, match="no subscriber 'nobody@example.org'"):
        subs.remove(env.store, "nobody@example.org", later)
    assert everyone(env)["cy@example.org"] == ("", "active", {"lab": ()})
