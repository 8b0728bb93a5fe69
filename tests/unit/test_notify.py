"""``[[notify]]`` parsing, message rendering and signatures (pure), and the API's endpoint
table against its OpenAPI document."""

from __future__ import annotations

import json

import pytest

from ashat.errors import InvalidInput
from ashat.notify.config import parse_targets
from ashat.notify.messages import render, signature, signature_valid
from ashat.workflow.models import Change, Deployment
from ashat.workflow.states import State


def change(state: State = State.APPROVED, previous: State | None = State.VERIFIED) -> Change:
    dep = Deployment(
        "hello-001", state, "first release", "alice", "2030-01-01T00:00:00Z",
        "2030-01-01T00:01:00Z", reason=None, details={"sequence": 3},
    )  # fmt: skip
    return Change(dep, previous, "bob", "2030-01-01T00:01:00Z")


def test_targets_parse_with_defaults() -> None:
    (t,) = parse_targets([{"url": "https://hooks.example/x/y"}])
    assert t.wants("completed") and t.wants("pushing")  # events default to "*"
    assert (t.format, t.retries, t.timeout_s, t.secret) == ("json", 3, 5.0, None)
    assert t.label() == "https://hooks.example/…"  # the path may be a secret


def test_targets_filter_events() -> None:
    (t,) = parse_targets([{"url": "http://127.0.0.1:9/h", "events": ["approved", "rolled_back"]}])
    assert t.wants("approved") and not t.wants("verified")


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({}, "give url or url_env"),
        ({"url": "ftp://x"}, "http(s) URL"),
        ({"url": "http://u:p@h/"}, "credentials"),
        ({"url": "http://h/", "events": ["approve"]}, "unknown state(s) approve"),
        ({"url": "http://h/", "events": []}, "events must be"),
        ({"url": "http://h/", "format": "xml"}, "format must be"),
        ({"url": "http://h/", "secret": "a", "secret_env": "B"}, "not both"),
        ({"url": "http://h/", "retries": -1}, "retries"),
        ({"url": "http://h/", "timeout_s": 0}, "timeout_s"),
        ({"url": "http://h/", "colour": "red"}, "unknown key(s) colour"),
        ({"url_env": "not a name"}, "environment variable"),
    ],
)
def test_bad_targets_are_refused_naming_the_key(table: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_targets([table])
    assert fragment in e.value.message and "[[notify]] #1" in e.value.message


def test_notify_must_be_an_array_of_tables() -> None:
    with pytest.raises(InvalidInput, match=r"\[\[notify\]\]"):
        parse_targets({"url": "http://h/"})


def test_secrets_and_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    (t,) = parse_targets([{"url_env": "HOOK_URL", "secret_env": "HOOK_SECRET"}])
    with pytest.raises(InvalidInput, match="HOOK_URL is not set"):
        t.resolve_url()
    monkeypatch.setenv("HOOK_URL", "https://hooks.example/T1/B2/secret")
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    assert t.resolve_url().endswith("/secret") and t.resolve_secret() == "s3cret"
    assert t.label() == "$HOOK_URL"


def test_json_message_names_the_event_and_the_deployment() -> None:
    m = render(change(), "hello-service", "json")
    body = json.loads(m.body)
    assert body["schema"] == "ashat.notification/1"
    assert (body["event"], body["previous_state"], body["actor"]) == ("approved", "verified", "bob")
    assert body["deployment"]["update_id"] == "hello-001" and body["project"] == "hello-service"
    assert (m.event, m.update_id, m.actor) == ("approved", "hello-001", "bob")


def test_slack_message_is_text() -> None:
    body = json.loads(render(change(State.PUSHING, None), "svc", "slack").body)
    assert set(body) == {"text"}
    assert "*hello-001* is now *pushing*, by bob" in body["text"] and "was" not in body["text"]


def test_slack_shows_a_description_as_written_not_as_markup() -> None:
    """A review: a deployer's description ``<!channel> … <https://evil.example/sso|Approve
    hello-005>`` reached the release channel as a mention of everyone and a disguised link."""
    from dataclasses import replace

    base = change(State.PUSHING, None)
    bait = "<!channel> Urgent: <https://evil.example/sso|Approve it> & more"
    dep = replace(base.deployment, description=bait, reason="see <@U123>")
    text = json.loads(render(replace(base, deployment=dep), "svc", "slack").body)["text"]
    assert "<" not in text and ">" not in text
    assert "&lt;!channel&gt; Urgent: &lt;https://evil.example/sso|Approve it&gt; &amp; more" in text
    assert "Reason: see &lt;@U123&gt;" in text


def test_signature_is_hmac_sha256_of_the_body() -> None:
    import hashlib
    import hmac

    body = b'{"a":1}'
    sig = signature("k", body)
    assert sig == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert signature_valid("k", body, sig)
    assert not signature_valid("k", body + b" ", sig)
    assert not signature_valid("other", body, sig) and not signature_valid("k", body, None)


def test_openapi_describes_every_endpoint_with_its_role() -> None:
    from ashat.api.openapi import document
    from ashat.api.routes import ENDPOINTS

    doc = document()
    assert doc["openapi"].startswith("3.1")
    for ep in ENDPOINTS:
        op = doc["paths"][ep.path][ep.method.lower()]
        assert op["operationId"] == ep.operation_id
        if ep.role is None:
            assert op["security"] == []
        else:
            assert op["security"] == [{"bearer": []}] and op["x-ashat-role"] == ep.role.value
            assert {"401", "403"} <= set(op["responses"])
        for p in ep.params:
            if p.where == "path":
                assert "{" + p.name + "}" in ep.path
        if ep.body is not None or ep.stream is not None:  # a review: 413 and 408 were not said
            assert {"408", "413"} <= set(op["responses"]), ep.path
    names = {ep.operation_id for ep in ENDPOINTS}
    assert len(names) == len(ENDPOINTS)
    refs = json.dumps(doc).split('"#/components/schemas/')[1:]
    assert {r.split('"')[0] for r in refs} <= set(doc["components"]["schemas"])


def test_roles_include_the_lower_ones() -> None:
    from ashat.ops.users import UserRole

    assert UserRole.ADMIN.allows(UserRole.VIEWER) and UserRole.APPROVER.allows(UserRole.DEPLOYER)
    assert not UserRole.DEPLOYER.allows(UserRole.APPROVER) and not UserRole.VIEWER.allows(
        UserRole.DEPLOYER
    )


def test_teams_message_is_one_adaptive_card() -> None:
    """Issue 21: the shape a Teams Workflows webhook takes ("Post to a channel when a
    webhook request is received"): a message whose attachments hold an Adaptive Card."""
    body = json.loads(render(change(State.PUSHING, None), "svc", "teams").body)
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    kinds = [element["type"] for element in card["body"]]
    assert kinds == ["TextBlock", "RichTextBlock", "FactSet"]
    facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
    assert facts["State"] == "pushing" and facts["Project"] == "svc"
    assert all(isinstance(v, str) for v in facts.values())


def test_a_teams_card_shows_what_people_wrote_as_plain_text() -> None:
    """A review: the description went into a TextBlock, which reads Markdown, so
    ``[Approve it](https://evil.example)`` became a link with other words on it. What
    people write is now a RichTextBlock's TextRun (no Markdown there), the reason too."""
    from dataclasses import replace

    base = change(State.CANCELLED, State.PUSHED)
    bait = "[Approve it on the dashboard](https://evil.example/sso) **now**"
    dep = replace(base.deployment, description=bait, reason="see [this](https://x.example)")
    card = json.loads(render(replace(base, deployment=dep), "svc", "teams").body)
    body = card["attachments"][0]["content"]["body"]
    markdown = [e.get("text", "") for e in body if e["type"] == "TextBlock"]
    markdown += [f["value"] for e in body if e["type"] == "FactSet" for f in e["facts"]]
    assert not any("](" in text for text in markdown)
    runs = [r["text"] for e in body if e["type"] == "RichTextBlock" for r in e["inlines"]]
    assert runs == [bait, "Reason: see [this](https://x.example)"]
    assert all(r["type"] == "TextRun" for e in body if e["type"] == "RichTextBlock"
               for r in e["inlines"])  # fmt: skip


def test_a_teams_card_is_delivered_as_a_workflows_webhook_takes_it() -> None:
    """Delivered to a loopback stand-in for a Teams Workflows webhook, which checks each
    request against the documented shape and answers 202 Accepted, as Teams does."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from ashat.notify.delivery import Dispatcher

    seen: list[str] = []

    class Teams(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            problems = []
            if self.headers.get("Content-Type") != "application/json":
                problems.append("Content-Type")
            try:
                data = json.loads(body)
                content = data["attachments"][0]["content"]
                assert data["type"] == "message" and content["type"] == "AdaptiveCard"
                assert data["attachments"][0]["contentType"].endswith("card.adaptive")
            except (ValueError, KeyError, IndexError, AssertionError) as e:
                problems.append(f"body: {e!r}")
            seen.append(";".join(problems) or "ok")
            self.send_response(400 if problems else 202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Teams)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/workflows/abc"
        (target,) = parse_targets([{"url": url, "format": "teams", "events": ["*"]}])
        failures: list[str] = []
        dispatcher = Dispatcher(lambda m, t, why, n: failures.append(why))
        dispatcher.submit(target, render(change(), "svc", "teams"))
        assert dispatcher.flush(10) == 0
        assert seen == ["ok"] and failures == [] and dispatcher.delivered == 1
    finally:
        server.shutdown()
        server.server_close()


def test_an_sms_goes_to_each_number_through_a_twilio_shaped_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Against a loopback server that checks each request as Twilio's Messages API documents
    it: POST /2010-04-01/Accounts/{AccountSid}/Messages.json, HTTP basic auth with the SID
    and token, a form with To, From and Body; it answers 201 Created (or 400 for a bad
    number, as Twilio does)."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs

    from ashat.notify.delivery import Dispatcher

    sid, token = "AC0123456789abcdef0123456789abcdef", "twilio-token-77"
    got: list[dict[str, str]] = []

    class Twilio(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            basic = base64.b64encode(f"{sid}:{token}".encode()).decode()
            ok = (
                self.path == f"/2010-04-01/Accounts/{sid}/Messages.json"
                and self.headers.get("Authorization") == f"Basic {basic}"
                and self.headers.get("Content-Type") == "application/x-www-form-urlencoded"
                and set(form) == {"To", "From", "Body"}
            )
            if ok:
                got.append({k: v[0] for k, v in form.items()})
            bad_number = form.get("To") == ["+15005550001"]  # Twilio's "invalid number"
            self.send_response(201 if ok and not bad_number else 400)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Twilio)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TWILIO_SID", sid)
    monkeypatch.setenv("TWILIO_TOKEN", token)
    try:
        api = f"http://127.0.0.1:{server.server_address[1]}"
        table = {"format": "sms", "url": api, "from": "+15005550006",
                 "to": ["+4915112345678", "+14155550100"],
                 "account_sid_env": "TWILIO_SID", "auth_token_env": "TWILIO_TOKEN"}  # fmt: skip
        (target,) = parse_targets([table])
        failures: list[str] = []
        dispatcher = Dispatcher(lambda m, t, why, n: failures.append(why))
        dispatcher.submit(target, render(change(), "svc", "sms"))
        assert dispatcher.flush(10) == 0 and failures == []
        assert [g["To"] for g in got] == ["+4915112345678", "+14155550100"]
        assert got[0]["From"] == "+15005550006"
        assert got[0]["Body"] == "[svc] hello-001 is now approved, by bob"
        # a number the provider refuses: final, recorded, not retried
        (bad,) = parse_targets([{**table, "to": ["+15005550001"]}])
        dispatcher.submit(bad, render(change(), "svc", "sms"))
        assert dispatcher.flush(10) == 0
        assert failures == ["the SMS provider answered HTTP 400"]
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(InvalidInput, match="phone number"):
        parse_targets([{**table, "to": ["0151 123"]}])
    with pytest.raises(InvalidInput, match="account_sid_env and auth_token_env"):
        parse_targets([{"format": "sms", "from": "+15005550006", "to": ["+14155550100"]}])


def test_a_gitlab_tracker_needs_its_site_and_skips_issues_elsewhere() -> None:
    """Found in review: without url, the token went to whatever host a --task URL named."""
    from ashat.notify.trackers import parse_updates, requests_for

    with pytest.raises(InvalidInput, match="gitlab tracker needs url"):
        parse_updates([{"tracker": "gitlab", "token_file": "/t"}])
    (update,) = parse_updates(
        [{"tracker": "gitlab", "url": "https://gitlab.acme.com", "token_file": "/t"}]
    )
    mine = {"ref": "m", "kind": "gitlab", "host": "https://gitlab.acme.com", "project": "g/p",
            "iid": 1}  # fmt: skip
    theirs = {**mine, "ref": "t", "host": "https://gitlab.attacker.example"}
    c = change()
    dep = c.deployment
    moved = Change(
        Deployment(dep.id, dep.state, dep.description, dep.created_by, dep.created_at,
                   dep.updated_at, details={"tasks": [mine, theirs]}),
        c.previous, c.actor, c.at,
    )  # fmt: skip
    (only,) = requests_for(update, moved, "svc")
    assert only["url"] == "https://gitlab.acme.com/api/v4/projects/g%2Fp/issues/1/notes"


def test_a_flush_returns_only_once_a_failure_is_recorded() -> None:
    """CI saw ``deploy log`` miss a ``notify.failed`` event: the job left the flushed set
    when it failed, before its failure was written. A slow recorder shows the race."""
    import time

    from ashat.notify.delivery import Dispatcher

    recorded: list[str] = []

    def slow_record(m: object, t: object, why: str, n: int) -> None:
        time.sleep(0.3)
        recorded.append(why)

    # nothing listens on port 9 of loopback: refused at once, no retry configured
    (target,) = parse_targets([{"url": "http://127.0.0.1:9/hook", "events": ["*"], "retries": 0}])
    dispatcher = Dispatcher(slow_record)
    dispatcher.submit(target, render(change(), "svc", "json"))
    time.sleep(0.1)  # the refusal is in; the recorder is sleeping
    assert dispatcher.flush(5) == 0
    assert len(recorded) == 1 and dispatcher.failed == 1
