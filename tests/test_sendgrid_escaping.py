"""SendGrid substitutions are escaped for where they land: a subscriber's name with markup characters shows as
text in the HTML part, stays as written in the text part, and is one line in the Subject. Checked by applying
the substitutions to the request exactly as SendGrid does (a plain replacement of each tag), and comparing
with what the outbox writes for the same person."""

from __future__ import annotations

import dataclasses
import io

from newsletter import ledger
from newsletter.digest import Variants
from newsletter.render import Recipient, personalise
from newsletter.subscribers import find, import_csv
from newsletter.tokens import Tokens

from .sendgrid_server import SendgridServer
from .test_sendgrid import KEY, configure, send

NAME = "Zoë <b>O'Hara</b> & \"Co\""
ESCAPED = "Zoë &lt;b&gt;O&#x27;Hara&lt;/b&gt; &amp; &quot;Co&quot;"
ADDRESS = "zoe@example.org"


def as_sendgrid_would(text: str, substitutions: dict[str, str]) -> str:
    for tag, value in substitutions.items():
        text = text.replace(tag, value)
    return text


def with_name_templates(env, config):
    """The bundled templates with the subscriber's name in the HTML body, an HTML attribute, the text part and
    the subject."""
    folder = env.tmp / "templates"
    folder.mkdir()
    html = (config.templates / "digest.html.j2").read_text()
    marker = "<p>You receive"
    assert marker in html
    (folder / "digest.html.j2").write_text(html.replace(
        marker, '<p class="greeting" title="{{ subscriber.name }}">Hello {{ subscriber.name }}!</p>\n' + marker))
    text = (config.templates / "digest.txt.j2").read_text()
    (folder / "digest.txt.j2").write_text(text.replace("You receive", "Hello {{ subscriber.name }}!\nYou receive"))
    weekly = dataclasses.replace(config.newsletter("weekly"), subject="For {{ subscriber.name }}: {{ posts|length }} "
                                                                     "new posts")
    return dataclasses.replace(config, templates=folder, newsletters={**config.newsletters, "weekly": weekly})


def test_a_name_with_markup_characters_is_escaped_in_the_html_part_only(env):
    quoted = NAME.replace('"', '""')
    import_csv(env.store, env.config, io.StringIO(f'email,name,newsletters\n{ADDRESS},"{quoted}",weekly\n'), "t.csv",
               env.now)
    assert find(env.store, ADDRESS).name == NAME
    with SendgridServer(api_key=KEY) as server:
        config = with_name_templates(env, configure(env, server.url))
        report = send(env, config)
    assert report.counts == {"sent": 1}
    assert server.violations == []
    [accepted] = server.accepted
    substitutions = accepted["substitutions"]
    text_part, html_part = (as_sendgrid_would(c["value"], substitutions) for c in accepted["content"])
    assert f'<p class="greeting" title="{ESCAPED}">Hello {ESCAPED}!</p>' in html_part
    assert NAME not in html_part and "<b>" not in html_part
    assert f"\nHello {NAME}!\nYou receive" in text_part
    assert as_sendgrid_would(accepted["subject"], substitutions) == f"For {NAME}: 10 new posts"
    assert accepted["to"] == [{"email": ADDRESS, "name": NAME}]

    # What SendGrid builds from the request is what the outbox writes for the same person.
    record = ledger.get_issue(env.store, report.issue_id)
    digest = Variants(env.store, config, config.newsletter("weekly"), record).for_categories("")
    subscriber = find(env.store, ADDRESS)
    unsubscribe, preferences = Tokens(env.store.secret()).urls(config.web_base_url, subscriber.id, "weekly")
    personal = personalise(digest, Recipient(ADDRESS, NAME, unsubscribe, preferences))
    assert (html_part, text_part) == (personal.html, personal.text)
