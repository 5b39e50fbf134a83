"""End to end with real processes, on SQLite and PostgreSQL: `newsletter send` through the outbox, the
List-Unsubscribe URL of a sent .eml POSTed to a running `newsletter serve`, a sign-up through the form with its
confirmation .eml, and the next issue going to the new reader and not to the one who left. Two `serve`
processes share the database and agree on tokens, CSRF and rate limits."""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import ROOT
from .web_helpers import CSRF

FIRST, SECOND = "2026-01-05T07:00:00+00:00", "2026-01-12T07:00:00+00:00"
NEW_POST = """---
title: "The breakwater is finished"
date: 2026-01-10T09:00:00
categories: [Technology]
---

The last block went in on Friday.
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Sample:
    """The sample newsletter in a folder of its own, with its own copy of the site, driven as a user would."""

    def __init__(self, folder: Path, db_url: str, port: int):
        self.folder, self.port = folder, port
        shutil.copytree(ROOT / "site", folder / "site")
        shutil.copytree(ROOT / "subscribers", folder / "subscribers")
        text = (ROOT / "newsletter.toml").read_text()
        (folder / "newsletter.toml").write_text(
            text + f'\n[render]\ntemplates = "{ROOT / "templates"}"\n\n[web]\nbase_url = '
                   f'"http://127.0.0.1:{port}/news"\nsignup_limit_address = 2\n')
        self.environ = {**os.environ, "NEWSLETTER_DATABASE_URL": db_url, "PYTHONUNBUFFERED": "1"}
        self.servers: list[subprocess.Popen] = []

    def run(self, *args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "newsletter", *args], cwd=self.folder, env=self.environ,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done

    def serve(self, port: int) -> str:
        log = open(self.folder / f"serve-{port}.log", "w")  # noqa: SIM115  (closed with the process)
        self.servers.append(subprocess.Popen([sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
                                             cwd=self.folder, env=self.environ, stdout=log, stderr=log))
        base = f"http://127.0.0.1:{port}/news"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/subscribe", timeout=1).status_code == 200:
                    return base
            except httpx.TransportError:
                pass
            assert self.servers[-1].poll() is None, (self.folder / f"serve-{port}.log").read_text()
            time.sleep(0.1)
        raise AssertionError("newsletter serve did not start within 30 s")

    def stop(self) -> str:
        for server in self.servers:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)
        return "".join(p.read_text() for p in self.folder.glob("serve-*.log"))

    def recipients(self, issue: str) -> set[str]:
        return {p.name.split("-", 1)[1][:-4] for p in (self.folder / "outbox" / issue).glob("*.eml")}

    def message(self, issue: str, address: str) -> email.message.EmailMessage:
        [path] = (self.folder / "outbox" / issue).glob(f"*-{address}.eml")
        return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


@pytest.fixture
def sample(tmp_path, db_url):
    sample = Sample(tmp_path, db_url, free_port())
    yield sample
    for server in sample.servers:
        if server.poll() is None:
            server.kill()
            server.wait()


def form_post(client: httpx.Client, page_url: str, post_url: str, fields: dict) -> httpx.Response:
    token = CSRF.search(client.get(page_url).text).group(1)
    return client.post(post_url, data={**fields, "csrf": token})


def test_leave_by_one_click_and_join_by_the_form_between_two_real_sends(sample):
    sample.run("subscribers", "import", "subscribers/sample.csv")
    sample.run("--now", FIRST, "send", "weekly")
    assert "ana.souza@example.org" in sample.recipients("weekly-2026-01-05")
    base = sample.serve(sample.port)
    other = sample.serve(free_port())

    # Ana's mail client posts the one-click unsubscribe of the copy she got
    sent = sample.message("weekly-2026-01-05", "ana.souza@example.org")
    assert sent["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.fullmatch(r"<(.+)>", sent["List-Unsubscribe"]).group(1)
    assert url.startswith(f"{base}/unsubscribe/")
    answer = httpx.post(url, content=b"List-Unsubscribe=One-Click",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (answer.status_code, answer.text) == (200, "Unsubscribed.\n")

    # a new reader signs up on one server and confirms on the other
    with httpx.Client(follow_redirects=True) as browser:
        posted = form_post(browser, f"{base}/subscribe", f"{base}/subscribe",
                           {"email": "New.Reader@example.org", "newsletters": "weekly"})
        assert posted.status_code == 200 and "Check your inbox" in posted.text
    confirmation = sample.message("signup", "New.Reader@example.org")
    link = re.search(r"http://\S+/confirm/\S+", confirmation.get_body(("plain",)).get_content()).group(0)
    with httpx.Client(follow_redirects=True) as browser:
        on_other = link.replace(base, other)
        done = form_post(browser, on_other, on_other, {})
        assert done.status_code == 200 and "You are subscribed" in done.text
    with httpx.Client(follow_redirects=True) as browser:  # the per-address limit (2 an hour) is counted in the database
        codes = [form_post(browser, f"{b}/subscribe", f"{b}/subscribe",
                           {"email": "new.reader@EXAMPLE.org", "newsletters": "weekly"}).status_code
                 for b in (other, base)]
        assert codes == [200, 429]

    (sample.folder / "site" / "_posts" / "2026-01-10-the-breakwater-is-finished.md").write_text(NEW_POST)
    sample.run("--now", SECOND, "send", "weekly")
    second = sample.recipients("weekly-2026-01-12")
    assert "New.Reader@example.org" in second
    assert "ana.souza@example.org" not in second
    assert second - {"New.Reader@example.org"} <= sample.recipients("weekly-2026-01-05") - {"ana.souza@example.org"}
    shown = sample.run("subscribers", "show", "ana.souza@example.org").stdout
    assert "unsubscribed from weekly: 2026-" in shown and "(one-click)" in shown

    logged = sample.stop()
    assert "POST /news/unsubscribe/<token> 200" in logged
    assert url.rsplit("/", 1)[1][:16] not in logged and link.rsplit("/", 1)[1][:16] not in logged
    assert "HTTP/1.1" not in logged  # uvicorn's access log, which prints paths, is off
