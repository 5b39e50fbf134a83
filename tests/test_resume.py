"""A resumed send sends what the first run rendered, even when the posts, the templates and the subject were
edited in between: the issue froze its posts, and each variant was rendered once and kept with the issue."""

from __future__ import annotations

import email
import email.policy
import io
import re
import shutil

import pytest

from newsletter import ledger
from newsletter.config import load_config
from newsletter.deliver.base import StopSend
from newsletter.deliver.outbox import OutboxProvider
from newsletter.deliver.run import Sender
from newsletter.digest import Variants
from newsletter.plan import plan_or_resume
from newsletter.site import read_site
from newsletter.store import open_store
from newsletter.subscribers import import_csv

from .conftest import FIXED_NOW, ROOT

POST = "_posts/2026-01-04-measuring-sea-level-by-hand.md"
EVERYTHING = [f"all{i}@example.org" for i in range(4)]
SCIENCE = ["sci0@example.org", "sci1@example.org"]


class StopsAfterOneBatch(OutboxProvider):
    """The outbox, until its second batch: then the send stops as it would on a refused login."""

    calls = 0

    def send(self, batch):
        self.calls += 1
        if self.calls > 1:
            raise StopSend("the provider stopped taking messages")
        return super().send(batch)


def newsletter_folder(tmp_path):
    """A newsletter of its own: a copy of the sample site and templates, batches of two, an outbox."""
    shutil.copytree(ROOT / "site", tmp_path / "site")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    edit(tmp_path / "templates" / "digest.txt.j2", "You receive", "Edition one. You receive")
    edit(tmp_path / "templates" / "digest.html.j2", "<p>You receive", "<p>Edition one. You receive")
    (tmp_path / "newsletter.toml").write_text((ROOT / "newsletter.toml").read_text().replace(
        "[delivery]\n", '[delivery]\nbatch_size = 2\noutbox = "outbox"\n'))
    return tmp_path / "newsletter.toml"


def edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


def send(config_path, provider_class=OutboxProvider):
    config = load_config(config_path)
    newsletter = config.newsletter("weekly")
    store = open_store(config.database_url)
    posts = read_site(config, FIXED_NOW).posts
    record, created = plan_or_resume(store, config, newsletter, posts, FIXED_NOW)
    provider = provider_class(config.delivery.outbox, config.delivery.batch_size)
    try:
        return created, Sender(store, config, newsletter, provider).run(record, FIXED_NOW), store
    except StopSend:
        return created, None, store


def messages(folder) -> dict[str, email.message.EmailMessage]:
    found = {}
    for path in sorted((folder / "outbox" / "weekly-2026-01-05").glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        found[message["To"].addresses[0].addr_spec] = message
    return found


def impersonal(message: email.message.EmailMessage, part: str) -> str:
    """A body with what differs per recipient (address, signed links) masked."""
    body = message.get_body((part,)).get_content()
    body = body.replace(message["To"].addresses[0].addr_spec, "ADDRESS")
    return re.sub(r"/(unsubscribe|preferences)/[\w.-]+", r"/\1/TOKEN", body)


@pytest.fixture
def config_path(tmp_path, db_url, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", db_url)
    path = newsletter_folder(tmp_path)
    store_config = load_config(path)
    store = open_store(store_config.database_url)
    rows = [f"{a},weekly,\n" for a in EVERYTHING] + [f"{a},weekly,Science\n" for a in SCIENCE]
    import_csv(store, store_config, io.StringIO("email,newsletters,categories\n" + "".join(rows)), "t.csv", FIXED_NOW)
    store.engine.dispose()
    return path


def test_a_resumed_send_carries_the_first_runs_posts_templates_and_subject(config_path, tmp_path):
    created, report, store = send(config_path, StopsAfterOneBatch)
    assert (created, report) == (True, None)
    [issue] = ledger.list_issues(store)
    assert issue["counts"] == {"sent": 2, "pending": 4}
    first = messages(tmp_path)
    assert sorted(first) == EVERYTHING[:2]

    # Between the runs: the newest post is retitled, the templates and the subject are edited.
    edit(tmp_path / "site" / POST, 'title: "Measuring sea level by hand"', 'title: "Sea level, now by satellite"')
    for name in ("digest.txt.j2", "digest.html.j2"):
        edit(tmp_path / "templates" / name, "Edition one.", "Edition two.")
    edit(config_path, "and more\"", "and much more\"")
    edited = load_config(config_path)
    assert read_site(edited, FIXED_NOW).posts[0].title == "Sea level, now by satellite"
    # the edits do change what rendering the issue afresh gives, so the checks below can fail
    fresh = Variants(None, edited, edited.newsletter("weekly"), ledger.get_issue(store, issue["id"]))
    assert "Edition two." in fresh.for_categories("").text

    store.engine.dispose()
    created, report, store = send(config_path)
    assert created is False and report.issue_id == issue["id"]
    assert report.counts == {"sent": 6}
    resumed = {a: m for a, m in messages(tmp_path).items() if a not in first}
    assert sorted(resumed) == sorted(EVERYTHING[2:] + SCIENCE)
    for address, message in resumed.items():
        assert message["Subject"] == "Harbourlight Weekly: Measuring sea level by hand and more", address
        for part in ("plain", "html"):
            body = message.get_body((part,)).get_content()
            assert "Edition one." in body and "Edition two." not in body, (address, part)
            assert "Measuring sea level by hand" in body and "by satellite" not in body, (address, part)
    # Who gets every category receives, word for word, what the first run sent; the Science readers get
    # their own variant, rendered by the first run although nobody received it then.
    for part in ("plain", "html"):
        sent_first = {impersonal(m, part) for m in first.values()}
        assert len(sent_first) == 1
        assert {impersonal(resumed[a], part) for a in EVERYTHING[2:]} == sent_first
        science = {impersonal(resumed[a], part) for a in SCIENCE}
        assert len(science) == 1 and science != sent_first
    science_text = resumed[SCIENCE[0]].get_body(("plain",)).get_content()
    assert "== Science ==" in science_text and "== Travel ==" not in science_text
    store.engine.dispose()
