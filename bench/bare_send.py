"""The bare baseline for bench/send.py: what a prototype with no framework does for the same subscribers.

sqlite3 for the ledger (one table, claim and mark a chunk with one statement and one commit each), 1,000
personalizations a request, one pre-rendered variant, HMAC tokens for the unsubscribe and preferences links,
json.dumps and http.client, one request at a time. No planning, no variants, no retries, no re-check of who
left: a floor to compare `newsletter send` against, not something to ship.

    python bench/bare_send.py DATABASE_FILE SENDGRID_URL API_KEY VARIANT_JSON
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import http.client
import json
import sqlite3
import sys
from urllib.parse import urlsplit

CHUNK = 1000


def token(key: bytes, purpose: str, subscriber_id: int) -> str:
    value = f"{purpose}.{subscriber_id}.bench"
    mac = base64.urlsafe_b64encode(hmac.new(key, value.encode(), hashlib.sha256).digest()[:20]).rstrip(b"=")
    return f"{value}.{mac.decode()}"


def main() -> None:
    database, url, api_key, variant_path = sys.argv[1:5]
    with open(variant_path, encoding="utf-8") as file:
        variant = json.load(file)
    key = hashlib.sha256(b"bench-secret").digest()
    db = sqlite3.connect(database)
    db.execute("CREATE TABLE IF NOT EXISTS bare_ledger (id INTEGER PRIMARY KEY, subscriber_id INTEGER, "
               "status TEXT, message_id TEXT)")
    db.execute("DELETE FROM bare_ledger")
    db.execute("INSERT INTO bare_ledger (subscriber_id, status) SELECT id, 'pending' FROM subscribers "
               "WHERE status = 'active' ORDER BY id")
    db.commit()
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    shared = {"from": {"email": "news@bench.example.org", "name": "Bench"}, "subject": variant["subject"],
              "content": [{"type": "text/plain", "value": variant["text"]},
                          {"type": "text/html", "value": variant["html"]}],
              "categories": ["bench"]}
    sent = 0
    while True:
        rows = db.execute("SELECT l.id, s.id, s.email, s.name FROM bare_ledger l JOIN subscribers s "
                          "ON s.id = l.subscriber_id WHERE l.status = 'pending' ORDER BY l.id LIMIT ?",
                          (CHUNK,)).fetchall()
        if not rows:
            break
        ids = [(r[0],) for r in rows]
        db.executemany("UPDATE bare_ledger SET status = 'sending' WHERE id = ?", ids)
        db.commit()
        personalizations = []
        for delivery_id, subscriber_id, email, name in rows:
            unsubscribe = f"https://news.bench.example.org/u/{token(key, 'u', subscriber_id)}"
            preferences = f"https://news.bench.example.org/p/{token(key, 'p', subscriber_id)}"
            personalizations.append({
                "to": [{"email": email, "name": name}],
                "custom_args": {"issue_id": "1", "delivery_id": str(delivery_id)},
                "substitutions": {"%nl_html_name%": html.escape(name), "%nl_text_name%": name,
                                  "%nl_subj_name%": name, "%nl_html_unsubscribe_url%": html.escape(unsubscribe),
                                  "%nl_text_unsubscribe_url%": unsubscribe,
                                  "%nl_html_preferences_url%": html.escape(preferences),
                                  "%nl_text_preferences_url%": preferences},
                "headers": {"List-Unsubscribe": f"<{unsubscribe}>",
                            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}})
        body = json.dumps({"personalizations": personalizations, **shared}).encode()
        connection.request("POST", "/v3/mail/send", body, headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status != 202:
            raise SystemExit(f"the server answered {response.status}: {answer[:300]!r}")
        message_id = response.getheader("X-Message-Id")
        db.executemany("UPDATE bare_ledger SET status = 'sent', message_id = ? WHERE id = ?",
                       [(message_id, i) for (i,) in ids])
        db.commit()
        sent += len(rows)
    print(f"bare: sent {sent}")


if __name__ == "__main__":
    main()
