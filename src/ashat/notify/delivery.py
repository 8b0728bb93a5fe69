"""Sending notifications in the background, with retries and backoff, never in the way.

:meth:`Dispatcher.submit` starts a daemon thread per message and returns at once; the thread
posts the body (signed when the target has a secret), retrying connection failures,
timeouts, 429 and 5xx answers after ``BACKOFF_S``, then twice that, and so on, up to the
target's ``retries``. A delivery that finally fails is handed to ``record_failure`` (the
ops layer makes it a ``notify.failed`` audit event); nothing is raised to anyone.

A short-lived process (a ``deploy`` verb) calls :meth:`Dispatcher.flush` before it exits:
it waits, at most ``timeout_s``, for the deliveries in flight; those still unfinished are
recorded as failed ("not delivered before the process ended") and left to their daemon
threads, which the exit ends. httpx is imported by the sending thread, not before, so verbs
that change no state pay nothing for this module.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ashat.errors import InvalidInput
from ashat.notify.config import Target
from ashat.notify.messages import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    Message,
    signature,
)
from ashat.transport import outgoing

BACKOFF_S = 0.25  # seconds before the first retry; doubled for each next one
MAX_ERROR_CHARS = 300

log = logging.getLogger("ashat.notify")

# (message, target, why it failed, attempts made)
RecordFailure = Callable[[Message, Target, str, int], None]


@dataclass(eq=False)
class _Job:
    target: Target
    message: Message
    delivery_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = "pending"  # -> delivered | failed | abandoned, set once under the lock
    attempts: int = 0
    thread: threading.Thread | None = None


class Dispatcher:
    """Delivers messages in daemon threads; see the module docstring."""

    def __init__(self, record_failure: RecordFailure) -> None:
        self._record_failure = record_failure
        self._lock = threading.Lock()
        self._jobs: set[_Job] = set()
        self._stop = threading.Event()  # set by close(): sleeping retries give up
        self.delivered = 0
        self.failed = 0

    def submit(self, target: Target, message: Message) -> None:
        job = _Job(target, message)
        thread = threading.Thread(
            target=self._run, args=(job,), name=f"ashat-notify-{job.delivery_id[:8]}", daemon=True
        )
        job.thread = thread
        with self._lock:
            self._jobs.add(job)
        thread.start()

    def close(self) -> None:
        """Stop retrying (a server shutting down); flush first to give deliveries a chance."""
        self._stop.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._jobs)

    def flush(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for deliveries in flight; return how many were abandoned."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                jobs = list(self._jobs)
            if not jobs:
                return 0
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            thread = jobs[0].thread
            if thread is not None:
                thread.join(min(remaining, 0.05))
        abandoned = 0
        for job in jobs:
            if self._finish(job, "abandoned"):
                abandoned += 1
                self._fail(
                    job,
                    f"not delivered before the process ended (waited {timeout_s:g} s; "
                    f"{job.attempts} attempt(s) made)",
                )
                self._forget(job)
        return abandoned

    # -- the sending thread ----------------------------------------------------------------

    def _finish(self, job: _Job, state: str) -> bool:
        """Move ``job`` out of pending once; False when something else already did."""
        with self._lock:
            if job.state != "pending":
                return False
            job.state = state
            if state == "delivered":
                self.delivered += 1
            else:
                self.failed += 1
            return True

    def _forget(self, job: _Job) -> None:
        """Out of the jobs a flush waits for: only once its failure, if any, is recorded."""
        with self._lock:
            self._jobs.discard(job)

    def _fail(self, job: _Job, reason: str) -> None:
        log.warning(
            "notification %s of %s to [[notify]] #%d (%s) failed: %s",
            job.message.event,
            job.message.update_id,
            job.target.index + 1,
            job.target.label(),
            reason,
        )
        try:
            self._record_failure(job.message, job.target, reason, job.attempts)
        except Exception:  # the store may be gone; the log line above stays
            log.exception("could not record the failed notification")

    def _run(self, job: _Job) -> None:
        try:
            reason = self._deliver(job)
        except Exception as e:  # never let a thread die silently
            reason = f"unexpected {type(e).__name__}: {e}"[:MAX_ERROR_CHARS]
        try:
            if reason is None:
                self._finish(job, "delivered")
            elif self._finish(job, "failed"):
                self._fail(job, reason)
        finally:
            self._forget(job)

    def _deliver(self, job: _Job) -> str | None:
        """Post with retries; None when delivered, else why not."""
        target, message = job.target, job.message
        if target.mail is not None:
            return self._mail(job)
        if target.sms is not None:
            return self._sms(job)
        if target.tracker is not None:
            return self._tracker(job)
        try:
            url = target.resolve_url()
            secret = target.resolve_secret()
        except InvalidInput as e:
            return e.message
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "ashat-notify",
            EVENT_HEADER: message.event,
            DELIVERY_HEADER: job.delivery_id,
        }
        if secret:
            headers[SIGNATURE_HEADER] = signature(secret, message.body)
        import httpx

        with outgoing.client(timeout_s=target.timeout_s) as client:

            def once() -> tuple[str | None, bool]:
                try:
                    resp = client.post(url, content=message.body, headers=headers)
                except httpx.HTTPError as e:
                    return _short(e), True
                if 200 <= resp.status_code < 300:
                    return None, False
                # a refusal it understood is final; 429 and 5xx may pass
                again = resp.status_code == 429 or resp.status_code >= 500
                return f"the receiver answered HTTP {resp.status_code}", again

            return self._retrying(job, once)

    def _sms(self, job: _Job) -> str | None:
        """One message per recipient; a recipient served is not sent to again on a retry."""

        sms = job.target.sms
        assert sms is not None
        try:
            auth = sms.credentials(job.target.index)
        except InvalidInput as e:
            return e.message
        left = list(sms.to)
        with outgoing.client(timeout_s=job.target.timeout_s) as client:
            return self._retrying(job, lambda: _sms_once(job, client, auth, left))

    def _tracker(self, job: _Job) -> str | None:
        """The tracker's requests (comments, a transition) in order; one done is not sent
        again on a retry."""
        import json

        import httpx

        update = job.target.tracker
        assert update is not None
        try:
            headers = update.headers(update.token())
        except InvalidInput as e:
            return e.message
        left = list(json.loads(job.message.body))
        with outgoing.client(timeout_s=job.target.timeout_s) as client:

            def once() -> tuple[str | None, bool]:
                while left:
                    r = left[0]
                    try:
                        resp = client.request(
                            r["method"], r["url"], json=r["json"], headers=headers
                        )
                    except httpx.HTTPError as e:
                        return _short(e), True
                    if not 200 <= resp.status_code < 300:
                        again = resp.status_code == 429 or resp.status_code >= 500
                        return f"{update.tracker} answered HTTP {resp.status_code}", again
                    left.pop(0)
                return None, False

            return self._retrying(job, once)

    def _retrying(self, job: _Job, once: Callable[[], tuple[str | None, bool]]) -> str | None:
        """Call ``once`` (-> why it failed or None, and whether trying again may help) up to
        the target's ``retries`` more times, pausing BACKOFF_S, then twice that, ..."""
        reason = "not attempted"
        for attempt in range(job.target.retries + 1):
            if attempt and self._stop.wait(BACKOFF_S * 2 ** (attempt - 1)):
                return f"{reason} (gave up retrying: shutting down)"
            if job.state != "pending":
                return reason
            job.attempts += 1
            failed, again = once()
            if failed is None:
                return None
            reason = failed
            if not again:
                return reason
        return f"{reason} after {job.attempts} attempt(s)"

    def _mail(self, job: _Job) -> str | None:
        """Send the email over SMTP with retries (a refused login or recipient is final);
        None when the server took it, else why not."""
        import json
        import smtplib
        import ssl
        from email.message import EmailMessage

        target, mail = job.target, job.target.mail
        assert mail is not None
        try:
            login = mail.login(target.index)
        except InvalidInput as e:
            return e.message
        parts = json.loads(job.message.body)
        msg = EmailMessage()
        msg["Subject"], msg["From"], msg["To"] = parts["subject"], mail.sender, ", ".join(mail.to)
        msg["X-Ashat-Event"] = job.message.event
        msg.set_content(parts["text"])
        msg.add_alternative(parts["html"], subtype="html")
        context = ssl.create_default_context(cafile=mail.ca_cert)

        def once() -> tuple[str | None, bool]:
            try:
                if mail.tls == "tls":
                    smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                        mail.host, mail.port, timeout=target.timeout_s, context=context
                    )
                else:
                    smtp = smtplib.SMTP(mail.host, mail.port, timeout=target.timeout_s)
                with smtp:
                    if mail.tls == "starttls":
                        smtp.starttls(context=context)
                    if login is not None:
                        _login(smtp, *login)
                    smtp.send_message(msg)
            except smtplib.SMTPAuthenticationError as e:
                return f"the SMTP server refused the login ({e.smtp_code})", False
            except smtplib.SMTPRecipientsRefused:
                return "the SMTP server refused every recipient", False
            except smtplib.SMTPResponseException as e:  # 4xx: temporary, may pass
                return f"the SMTP server answered {e.smtp_code}", 400 <= e.smtp_code < 500
            except (smtplib.SMTPException, OSError) as e:
                return _short(e), True
            return None, False

        return self._retrying(job, once)


def _sms_once(job: _Job, client: Any, auth: tuple[str, str], left: list[str]) -> Any:
    """A try for each recipient not served yet (Twilio's Messages API: a form POST with
    basic auth, 201 Created); -> (why not, whether to try again)."""
    import json

    import httpx

    sms = job.target.sms
    assert sms is not None
    url = f"{sms.api}/2010-04-01/Accounts/{auth[0]}/Messages.json"
    text = json.loads(job.message.body)["text"]
    for number in list(left):
        try:
            resp = client.post(
                url, data={"To": number, "From": sms.sender, "Body": text}, auth=auth
            )
        except httpx.HTTPError as e:
            return _short(e), True
        if resp.status_code not in (200, 201):
            again = resp.status_code == 429 or resp.status_code >= 500
            return f"the SMS provider answered HTTP {resp.status_code}", again
        left.remove(number)
    return None, False


def _short(e: Exception) -> str:
    return outgoing.short(e)


def _login(smtp: Any, user: str, password: str) -> None:
    """AUTH PLAIN where the server offers it (one mechanism: a refusal is final, not a
    round of others), else what smtplib picks."""
    smtp.ehlo_or_helo_if_needed()
    offered = smtp.esmtp_features.get("auth", "").upper().split()
    if "PLAIN" not in offered:
        smtp.login(user, password)
        return
    smtp.user, smtp.password = user, password
    smtp.auth("PLAIN", smtp.auth_plain)
