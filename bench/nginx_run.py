"""Running Debian's nginx on loopback for the benchmarks and the tests (issue 20).

:func:`adapt` takes a file of ``contrib/nginx/`` and sets its lines marked CHANGE (each one
must be found: the shipped file and its users move together); :func:`start` runs nginx in
the foreground under a directory of its own, with an access log that says, per request, the
URI, the status, the bytes nginx sent, what its upstream sent (``0_`` after an
``X-Accel-Redirect``) and the cache status.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CONTRIB = Path(__file__).resolve().parents[1] / "contrib" / "nginx"


def nginx_binary() -> str | None:
    """Debian's nginx (``/usr/sbin`` is not on every PATH), or None."""
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


def adapt(name: str, changes: dict[str, str]) -> str:
    """``contrib/nginx/NAME`` with each ``old`` replaced by ``new``; every ``old`` must be
    there."""
    text = (CONTRIB / name).read_text()
    for old, new in changes.items():
        if old not in text:
            raise ValueError(f"contrib/nginx/{name} no longer has {old!r}")
        text = text.replace(old, new)
    return text


@dataclass
class Nginx:
    port: int
    home: Path
    proc: subprocess.Popen[bytes]

    def access(self) -> list[dict[str, str]]:
        """The access log, a dict per request: uri, status, sent, upstream, cache, and
        ``answered``: when its answer began (the Unix time the request came plus the time
        its upstream took to answer with headers, if it went upstream)."""
        path = self.home / "access.log"
        rows = []
        for line in path.read_text().splitlines() if path.exists() else []:
            timing, line = line.split("|", 1)
            logged, took, header = timing.split(" ", 2)  # "0.004 : 0.001_": a redirect followed
            uri, status, sent, rest = line.split(" ", 3)
            upstream, cache = rest.rsplit(" ", 1)
            first = header.rstrip("_").split(" : ")[0]
            answered = float(logged) - float(took) + (0.0 if first == "-" else float(first))
            rows.append(
                {"uri": uri, "status": status, "sent": sent, "upstream": upstream, "cache": cache,
                 "answered": answered}
            )  # fmt: skip
        return rows

    def cpu_s(self) -> float:
        """CPU seconds of the master and its workers (children) so far."""
        total = 0.0
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(home: Path, servers: str, port: int, workers: str = "1") -> Nginx:
    """nginx serving ``servers`` (``server {}`` blocks and what goes beside them in
    ``http {}``), listening on ``port`` on loopback. Raises RuntimeError if it does not
    start."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
    home.mkdir(parents=True, exist_ok=True)
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (home / d).mkdir(exist_ok=True)
    conf = home / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""  # workers that can read the data dirs
    conf.write_text(
        f"""{user}
worker_processes {workers};
daemon off;
pid {home}/nginx.pid;
error_log {home}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format ashat '$msec $request_time ${{upstream_header_time}}_|'
                     '$request_uri $status $body_bytes_sent '
                     '${{upstream_response_length}}_ ${{upstream_cache_status}}_';
    access_log {home}/access.log ashat;
    client_body_temp_path {home}/body;
    proxy_temp_path {home}/proxy;
    fastcgi_temp_path {home}/fastcgi;
    uwsgi_temp_path {home}/uwsgi;
    scgi_temp_path {home}/scgi;
{servers}
}}
"""
    )
    check = subprocess.run([binary, "-t", "-p", str(home), "-c", str(conf)], capture_output=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t refused {conf}: {check.stderr.decode(errors='replace')}")
    with (home / "stderr.log").open("wb") as err:
        proc = subprocess.Popen(
            [binary, "-p", str(home), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=err
        )
    n = Nginx(port, home, proc)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return n
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    n.stop()
    raise RuntimeError(f"nginx did not listen on {port}: {(home / 'error.log').read_text()}")
