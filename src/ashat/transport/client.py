"""``AgentClient``: the one client of the agent's v1 routes.

Timeouts on every request; retries with backoff on connection errors and 5xx (every v1
route is idempotent, DESIGN §5); ``--ca-cert`` honoured for https; answers read with a size
limit. Blobs go up by difference: :meth:`missing` asks which digests the agent lacks and
:meth:`upload` streams only those, many small ones per request in the pack format the agent
reads (``<sha256> <size>\\n`` then the bytes, repeated), in packs of at most 64 MiB, two
requests at once; the agent stores each pack whole, so a cut upload keeps the packs done.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import httpx

from ashat.transport import outgoing
from ashat.transport.errors import (
    BadResponse,
    Unauthorized,
    Unreachable,
    rejected,
)

if TYPE_CHECKING:
    from ashat.workflow.models import RolloutStatus

CHUNK = 1024 * 1024  # bytes per read when streaming a blob
RETRY_STATUSES = frozenset({502, 503, 504})
# An upload goes in packs of at most this many bytes (a bigger blob is a pack of its own); the
# agent stores each pack whole once it has all of it, so a cut loses one pack per stream.
PACK_TARGET_BYTES = 64 * 1024 * 1024
UPLOAD_STREAMS = 2  # pack requests at once: one streams while the agent makes the last durable
PROGRESS_STEP = 1024 * 1024  # bytes sent between two calls of an upload's progress callback

Progress = Callable[[int, int], None]  # (bytes sent so far, bytes to send), from any thread


@dataclass(frozen=True)
class BlobRef:
    sha256: str
    size: int
    path: Path


def _read_token(path: str | None) -> str | None:
    if not path:
        return None
    from ashat.project import read_token_file

    return read_token_file(Path(path))


class AgentClient:
    """A connection to one agent (PUBLIC, OMEGA, or a mainframe's OMEGA)."""

    retry_statuses: frozenset[int] = RETRY_STATUSES  # answers worth sending the request again

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        ca_cert: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # told how far each upload has got (a progress bar); None: nobody asked
        self.upload_progress: Progress | None = None
        self.retries = retries
        self.backoff_s = backoff_s
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = outgoing.client(
            base_url=self.base_url,
            headers=headers,
            verify=outgoing.tls_for(self.base_url, ca_cert, "CA certificate"),
            timeout_s=timeout_s,
            max_connections=UPLOAD_STREAMS + 4,
        )

    @classmethod
    def for_server(cls, server: Any, timeout_s: float = 30.0, retries: int = 3) -> AgentClient:
        """A client for a configured :class:`~ashat.workflow.models.Server`."""
        token = _read_token(server.token_path)
        return cls(server.url, token, server.ca_cert, timeout_s, retries=retries)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the seam --------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: Callable[[], Iterable[bytes] | bytes] | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Send one request (retrying transient failures) and return its JSON answer.

        Raises Unreachable, TLSFailure, Unauthorized, BadResponse or AgentRejected.
        """
        url = f"{self.base_url}{path}"
        attempt = 0
        while True:
            attempt += 1
            try:
                kwargs: dict[str, Any] = {}
                if json_body is not None:
                    kwargs["json"] = json_body
                if content is not None:
                    kwargs["content"] = content()
                if timeout_s is not None:
                    kwargs["timeout"] = timeout_s
                with self._http.stream(method, path, **kwargs) as resp:
                    body = outgoing.read_answer(resp, url)
                    status = resp.status_code
            except httpx.HTTPError as e:
                err, cause = outgoing.failure(e, url), e
                if not isinstance(err, Unreachable):  # a certificate, not worth again
                    raise err from e
            else:
                if status in self.retry_statuses and attempt <= self.retries:
                    time.sleep(self.backoff_s * 2 ** (attempt - 1))
                    continue
                return self._interpret(status, body, url)
            if attempt > self.retries:
                raise err from cause
            time.sleep(self.backoff_s * 2 ** (attempt - 1))

    @staticmethod
    def _interpret(status: int, body: bytes, url: str) -> dict[str, Any]:
        data = json_or_none(body)
        if status in (401, 403):
            raise Unauthorized(
                f"{url} refused our credentials ({status}): check the server's token "
                "(deploy configure ... --token-file)"
            )
        if not isinstance(data, dict):
            raise BadResponse(f"{url} answered {status} with something that is not a JSON object")
        if 400 <= status < 500:
            reason = data.get("error") or f"HTTP {status}"
            raise rejected(f"the server refused: {reason}", status, data)
        if status >= 500:
            raise BadResponse(f"{url} failed with {status}: {data.get('error', 'server error')}")
        return data

    # -- routes ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/v1/health")

    def missing(self, digests: Sequence[str]) -> list[str]:
        out: list[str] = []
        for i in range(0, len(digests), 50_000):
            answer = self.request(
                "POST", "/v1/blobs/missing", json_body={"digests": list(digests[i : i + 50_000])}
            )
            got = answer.get("missing")
            if not isinstance(got, list):
                raise BadResponse("the agent's answer to /v1/blobs/missing has no 'missing' list")
            out.extend(str(d) for d in got)
        return out

    def upload(self, blobs: Sequence[BlobRef]) -> int:
        """Send ``blobs`` in packs of at most :data:`PACK_TARGET_BYTES` (or one bigger blob),
        in path order, :data:`UPLOAD_STREAMS` requests at once; return the bytes sent. The
        packs the agent stored stay stored if a later one fails: sent again, only the rest
        goes."""
        if not blobs:
            return 0
        planned = _plan_packs(blobs, PACK_TARGET_BYTES)
        packs = iter(enumerate(planned))
        lock, failed = threading.Lock(), threading.Event()
        total = sum(b.size for b in blobs)
        meter = _Meter(total, self.upload_progress)

        def send_in_turn() -> None:
            while not failed.is_set():
                with lock:
                    number, pack = next(packs, (0, None))
                if pack is None:
                    return
                try:
                    self._send_pack(pack, meter.counter(number))
                except BaseException:
                    failed.set()  # the other stream starts no new pack
                    raise

        n = min(UPLOAD_STREAMS, len(planned))
        if n <= 1:
            send_in_turn()
            return total
        errors: list[BaseException] = []

        def stream() -> None:
            try:
                send_in_turn()
            except BaseException as e:
                errors.append(e)

        # Daemon threads, not a pool: a pool is waited for, at its end and at the process's.
        threads = [
            threading.Thread(target=stream, name=f"ashat-upload-{i}", daemon=True) for i in range(n)
        ]
        for t in threads:
            t.start()
        try:
            for t in threads:
                t.join()
        except BaseException:  # Ctrl-C: end now. A pack cut short is not stored; the process's
            failed.set()  # exit closes its connection (the streams were not waited for: a
            meter.silence()  # 64 MiB pack on a slow line takes minutes), and says no more
            raise
        if errors:  # a stream's error: the other one finished its pack, and started no new one
            raise errors[0]
        return total

    def _send_pack(self, pack: list[BlobRef], sent: Callable[[int], None] | None = None) -> None:
        self.request(
            "POST", "/v1/blobs/pack", content=lambda: _pack_stream(pack, sent), timeout_s=600
        )

    def stage(self, manifest_bytes: bytes) -> dict[str, Any]:
        return self.request("POST", "/v1/releases", content=lambda: manifest_bytes)

    def activate(self, update_id: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/releases/{update_id}/activate", timeout_s=600)

    def rollback(self, from_id: str | None = None, to_id: str | None = None) -> dict[str, Any]:
        return self.request(
            "POST", "/v1/rollback", json_body={"from": from_id, "to": to_id}, timeout_s=600
        )

    def releases(self) -> dict[str, Any]:
        return self.request("GET", "/v1/releases")

    def attest(
        self, update_id: str, results: Sequence[dict[str, Any]], required: Sequence[str],
        settings: dict[str, Any],
    ) -> dict[str, Any]:  # fmt: skip
        """PUBLIC's signed verification statement of ``update_id`` (it must run it)."""
        return self.request(
            "POST",
            f"/v1/releases/{update_id}/attest",
            json_body={"results": list(results), "required": list(required), "settings": settings},
        )

    # -- OMEGA's fleet routes (ashat.fleet.omega_routes) ---------------------------------------

    def countersign(self, update_id: str, record: dict[str, Any]) -> dict[str, Any]:
        """OMEGA's signature over the approval ``record`` of a staged release (it checks the
        chain of trust in it first); ``{"update_id", "approval_keyid", ...}``."""
        return self.request(
            "POST", f"/v1/releases/{quote(update_id)}/approve", json_body={"approval": record}
        )

    def start_rollout(self, update_id: str, distribution: dict[str, Any]) -> RolloutStatus:
        """Distribute the release OMEGA runs to its fleet, in ``distribution``'s waves."""
        return self._rollout("POST", "/v1/fleet/rollouts", {"update_id": update_id, **distribution})

    def rollout_status(self, rollout_id: str) -> RolloutStatus:
        return self._rollout("GET", f"/v1/fleet/rollouts/{quote(rollout_id)}")

    def rollouts_of(self, update_id: str) -> list[RolloutStatus]:
        """Every rollout of a release (install and rollback), oldest first."""
        answer = self.request("GET", f"/v1/fleet/rollouts?{urlencode({'update_id': update_id})}")
        found = answer.get("rollouts")
        if not isinstance(found, list):
            raise BadResponse("OMEGA's list of rollouts has no 'rollouts' list")
        return [r for r in found if isinstance(r, dict)]  # type: ignore[misc]

    def control_rollout(self, rollout_id: str, action: str, reason: str | None) -> RolloutStatus:
        """``pause``, ``resume``, ``abort`` or ``retry`` a rollout."""
        path = f"/v1/fleet/rollouts/{quote(rollout_id)}/{quote(action)}"
        return self._rollout("POST", path, {"reason": reason})

    def fleet_rollback(self, from_id: str, to_id: Any, reason: str) -> RolloutStatus:
        """Send the fleet running ``from_id`` back to ``to_id`` (OMEGA's previous)."""
        body = {"from": from_id, "to": to_id, "reason": reason}
        return self._rollout("POST", "/v1/fleet/rollback", body)

    def mainframes(self, where: str | None = None) -> list[dict[str, Any]]:
        """OMEGA's registry of Licensed Mainframes (those ``where`` selects)."""
        path = "/v1/fleet/mainframes"
        if where:
            from urllib.parse import urlencode

            path += "?" + urlencode({"where": where})
        rows = self.request("GET", path).get("mainframes")
        return [m for m in rows if isinstance(m, dict)] if isinstance(rows, list) else []

    def label(self, mainframe_id: str, labels: dict[str, str], remove: list[str]) -> dict[str, Any]:
        body = {"set": labels, "remove": remove}
        return self.request("POST", f"/v1/fleet/mainframes/{mainframe_id}/labels", json_body=body)

    def pin(self, mainframe_id: str, update_id: str | None) -> dict[str, Any]:
        body = {"update_id": update_id}
        return self.request("POST", f"/v1/fleet/mainframes/{mainframe_id}/pin", json_body=body)

    def revoke_license(self, license_id: str) -> dict[str, Any]:
        return self.request("POST", "/v1/fleet/revocations", json_body={"license_id": license_id})

    def revocations(self) -> list[dict[str, Any]]:
        rows = self.request("GET", "/v1/fleet/revocations").get("revoked")
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    def hand_roots(self, roots: list[Any]) -> dict[str, Any]:
        """Give OMEGA a root chain; it keeps what chains from the version it holds."""
        return self.request("POST", "/v1/trust/roots", json_body={"roots": roots})

    def _rollout(self, method: str, path: str, body: Any = None) -> RolloutStatus:
        answer = self.request(method, path, json_body=body)
        if not isinstance(answer.get("rollout_id"), str):
            raise BadResponse(f"OMEGA's answer to {method} {path} names no rollout")
        return answer  # type: ignore[return-value]

    def download(self, sha256: str, dest: Path, size: int) -> int:
        """Stream blob ``sha256`` of ``size`` bytes (as a signed manifest says) into ``dest``,
        verifying its digest; return its size. Nothing is left at ``dest`` on failure.

        Raises Unreachable, BadResponse (more bytes than ``size``, wrong digest),
        Unauthorized or AgentRejected.
        """
        import hashlib

        url = f"{self.base_url}/v1/blobs/{sha256}"
        digest, got = hashlib.sha256(), 0
        try:
            with self._http.stream("GET", f"/v1/blobs/{sha256}", timeout=600) as resp:
                if resp.status_code != 200:
                    self._interpret(resp.status_code, outgoing.read_answer(resp, url), url)
                    raise BadResponse(f"{url} answered {resp.status_code} without the blob")
                with open(dest, "wb") as f:
                    for chunk in resp.iter_bytes(CHUNK):
                        digest.update(chunk)
                        got += len(chunk)
                        if got > size:  # an endless body must not fill the disk
                            raise BadResponse(f"{url} sent more than the blob's {size} bytes")
                        f.write(chunk)
            if digest.hexdigest() != sha256:
                raise BadResponse(f"{url} sent bytes whose digest is not {sha256}")
        except BaseException as e:
            dest.unlink(missing_ok=True)
            if isinstance(e, httpx.HTTPError):
                raise outgoing.failure(e, url) from e
            raise
        return got


def json_or_none(body: bytes) -> Any:
    """``body`` parsed as JSON ({} when empty), or None when it is not JSON."""
    try:
        return json.loads(body) if body else {}
    except (ValueError, RecursionError):  # RecursionError: nested deeper than we parse
        return None


def _plan_packs(blobs: Sequence[BlobRef], target: int) -> list[list[BlobRef]]:
    """``blobs`` in the order of their paths (a tree is read in order), cut into packs of
    at most ``target`` bytes, or of one bigger blob."""
    packs: list[list[BlobRef]] = [[]]
    size = 0
    for b in sorted(blobs, key=lambda b: str(b.path)):
        if packs[-1] and size + b.size > target:
            packs.append([])
            size = 0
        packs[-1].append(b)
        size += b.size
    return packs if packs[0] else []


def _pack_stream(pack: list[BlobRef], sent: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """The pack's body; ``sent(n)`` after each ``n`` bytes of blobs handed on (from 0 again
    when the request is sent again: see :meth:`_Meter.counter`)."""
    if sent is not None:
        sent(-1)
    for blob in pack:
        yield f"{blob.sha256} {blob.size}\n".encode("ascii")
        with open(blob.path, "rb") as f:
            remaining = blob.size
            while remaining > 0:
                chunk = f.read(min(CHUNK, remaining))
                if not chunk:
                    raise BadResponse(f"{blob.path} shrank while it was being sent")
                remaining -= len(chunk)
                yield chunk
                if sent is not None:
                    sent(len(chunk))


class _Meter:
    """Bytes of an upload sent so far, across its streams, told to ``report`` every
    :data:`PROGRESS_STEP` bytes and at the end. A pack sent again (a retried request)
    counts from 0 again, so the figure never passes the total."""

    def __init__(self, total: int, report: Progress | None) -> None:
        self.total, self.report = total, report
        self._lock = threading.Lock()
        self._by_pack: dict[int, int] = {}
        self._sent = self._shown = 0

    def counter(self, pack: int) -> Callable[[int], None] | None:
        """What pack number ``pack``'s stream calls: ``n`` bytes more, or -1 at its start."""
        if self.report is None:
            return None

        def count(n: int) -> None:
            with self._lock:
                if n < 0:  # (again) from its first byte
                    self._sent -= self._by_pack.pop(pack, 0)
                    return
                self._by_pack[pack] = self._by_pack.get(pack, 0) + n
                self._sent += n
                if self._sent - self._shown < PROGRESS_STEP and self._sent < self.total:
                    return
                self._shown = self._sent
                if self.report is None:  # silenced since
                    return
                try:
                    self.report(self._sent, self.total)
                except Exception:  # a bar that cannot draw (a terminal gone) stops the bar,
                    self.report = None  # not the upload

        return count

    def silence(self) -> None:
        """Report nothing more (the caller has stopped listening)."""
        with self._lock:
            self.report = None
