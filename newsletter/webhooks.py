"""SendGrid's signed Event Webhook: verify the post, turn its events into `events.Event`s, record them.

SendGrid signs the request's timestamp header followed by its exact body with ECDSA (P-256, SHA-256); the
public key it shows is configured as `[delivery.sendgrid] webhook_public_key`. A post that is unsigned, badly
signed, altered, or signed longer ago than `webhook_tolerance` is answered 403 and changes nothing. Events are
matched to deliveries through the custom_args every send sets (issue_id and delivery_id, which SendGrid repeats
at the top level of each event) and recorded in one transaction per post. The web app mounts
`handle_sendgrid_webhook` at POST /hooks/sendgrid; nothing here needs a web framework.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import datetime, timezone

from .config import Config
from .events import KINDS, Event, record_events
from .store import Store, utcnow

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
#: SendGrid's reasons for dropping a message, and what each says about the address
DROPPED = {"invalid": "hard", "bounced address": "hard", "spam reporting address": "complaint",
           "unsubscribed address": "unsubscribe"}


def load_public_key(text: str):
    """The key SendGrid shows (base64 of a DER SubjectPublicKeyInfo), loaded by the sendgrid package's own
    helper; ValueError saying what is wrong when it is not an elliptic-curve public key."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from sendgrid.helpers.eventwebhook import EventWebhook

    compact = "".join(text.split())
    try:
        base64.b64decode(compact, validate=True)
        key = EventWebhook().convert_public_key_to_ecdsa(compact)
    except (ValueError, binascii.Error, TypeError) as err:
        raise ValueError(f"not a base64 public key ({type(err).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an elliptic-curve (ECDSA) public key")
    return key


def verify_signature(public_key: str, body: bytes, signature: str, timestamp: str) -> bool:
    """Whether SendGrid signed exactly `timestamp` + `body` (the sendgrid package's EventWebhook does the
    ECDSA check; a body that is not UTF-8 cannot be one SendGrid signed)."""
    from sendgrid.helpers.eventwebhook import EventWebhook

    try:
        payload = body.decode("utf-8")
        return bool(EventWebhook().verify_signature(payload, signature, timestamp, load_public_key(public_key)))
    except (UnicodeDecodeError, ValueError, binascii.Error, TypeError):
        return False


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def handle_sendgrid_webhook(store: Store, config: Config, body: bytes, headers: Mapping[str, str], *,
                            clock: Callable[[], datetime] = utcnow) -> tuple[int, str]:
    """Answer one post of SendGrid's Event Webhook: (HTTP status, a one-line message for the response body).

    403 for anything not signed by the configured key within the tolerance, with nothing changed; 400 for a
    signed body that is not a JSON array of events; 200 once the events are recorded (events that match no
    delivery of this database are counted, not recorded, and not worth a retry from SendGrid)."""
    settings = config.delivery.sendgrid
    if not settings.webhook_public_key:
        return 403, ("signed events are required, and [delivery.sendgrid] webhook_public_key is not set: paste the "
                     "verification key SendGrid shows for its Signed Event Webhook")
    signature, timestamp = _header(headers, SIGNATURE_HEADER), _header(headers, TIMESTAMP_HEADER)
    if not signature or not timestamp:
        return 403, f"unsigned: the {SIGNATURE_HEADER} and {TIMESTAMP_HEADER} headers are required"
    if not timestamp.strip().isdigit():
        return 403, f"{TIMESTAMP_HEADER} is not a Unix time"
    now = clock()
    age = now.timestamp() - int(timestamp)
    tolerance = settings.webhook_tolerance.total_seconds()
    if abs(age) > tolerance:
        return 403, (f"the signed timestamp is {abs(age):.0f} s {'old' if age > 0 else 'in the future'}, past the "
                     f"tolerance of {tolerance:.0f} s ([delivery.sendgrid] webhook_tolerance)")
    if not verify_signature(settings.webhook_public_key, body, signature, timestamp):
        return 403, "the signature does not match the body and timestamp for the configured public key"
    try:
        posted = json.loads(body)
    except ValueError:
        return 400, "the body is not JSON"
    if not isinstance(posted, list) or not all(isinstance(e, dict) for e in posted):
        return 400, "the body is not a JSON array of event objects"
    events, ignored = parse_sendgrid_events(posted)
    report = record_events(store, events, now, soft_bounce_limit=config.delivery.soft_bounce_limit)
    return 200, f"{report.summary()}; ignored {ignored} (other kinds, or not from a newsletter send)"


def parse_sendgrid_events(posted: list[dict]) -> tuple[list[Event], int]:
    """The events of a post that concern a delivery, and how many others were ignored (kinds not recorded,
    such as `processed`; events without our custom_args, such as a test copy's, whose delivery id is 0)."""
    found, ignored = [], 0
    for item in posted:
        kind = str(item.get("event") or "")
        delivery, issue = _number(item.get("delivery_id")), _number(item.get("issue_id"))
        if kind not in KINDS or not delivery or issue is None:
            ignored += 1
            continue
        found.append(Event(
            key=f"sendgrid:{_event_id(item)}", source="sendgrid", delivery_id=delivery, kind=kind,
            occurred_at=_moment(item.get("timestamp")), classification=_classify(kind, item),
            detail=_detail(kind, item), issue_id=issue,
            email=str(item["email"]) if item.get("email") else None))
    return found, ignored


def _number(value) -> int | None:
    text = str(value).strip() if value is not None else ""
    return int(text) if text.isdigit() else None


def _event_id(item: dict) -> str:
    """SendGrid's own id for the event; for an event without one, a digest of its content, so that the same
    event posted twice is still recognised."""
    given = item.get("sg_event_id")
    if given:
        return str(given)[:200]
    return "sha256-" + hashlib.sha256(json.dumps(item, sort_keys=True).encode("utf-8")).hexdigest()


def _moment(value) -> datetime:
    try:
        return datetime.fromtimestamp(int(value), timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.fromtimestamp(0, timezone.utc)


def _classify(kind: str, item: dict) -> str | None:
    """Hard or soft for a bounce: SendGrid's `blocked` type, and any 4.x.x status, are temporary; what
    a dropped event's reason says about the address."""
    if kind == "bounce":
        status = str(item.get("status") or "")
        return "soft" if str(item.get("type") or "").lower() == "blocked" or status.startswith("4") else "hard"
    if kind == "dropped":
        return DROPPED.get(str(item.get("reason") or "").strip().lower())
    return None


def _detail(kind: str, item: dict) -> str | None:
    parts = [str(item[k]) for k in ("status", "reason", "response", "bounce_classification", "url")
             if item.get(k) not in (None, "")]
    return "; ".join(parts)[:2000] or None
