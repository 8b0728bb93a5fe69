"""Every ``ashat.toml`` key, described once: the reference in docs/guide.md and the comments
``deploy init`` writes are both rendered from :data:`KEYS`.

The parsers stay where they are used (``config.AppConfig``, ``workflow.approve``'s policies,
``notify.config``, the checks in ``verify/``); this table names their keys and takes the
defaults from their own dataclasses and constants where they have them, so a changed
default changes the guide. tests/unit/test_config_reference.py fails when a parser reads a
key this table lacks, and when the guide's reference differs from :func:`render_markdown`.

``python -m ashat.config_reference`` prints the Markdown reference (``--check FILE`` exits 1
when FILE's generated section is out of date).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

BEGIN = "<!-- BEGIN GENERATED CONFIG REFERENCE (python -m ashat.config_reference) -->"
END = "<!-- END GENERATED CONFIG REFERENCE -->"


@dataclass(frozen=True)
class Key:
    """One key: the table it lives in (``app``, ``verify.performance``, ``[[notify]]`` ...),
    its TOML type, its default as TOML text (``""`` when it has none) and what it does."""

    table: str
    name: str
    type: str
    default: str
    doc: str


@dataclass(frozen=True)
class Table:
    name: str  # as written in ashat.toml: "app", "verify.api" (an array of tables) ...
    array: bool
    doc: str


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def _build() -> tuple[list[Table], list[Key]]:
    # Defaults come from the parsers' own dataclasses and constants.
    from ashat.config import AppConfig
    from ashat.notify.config import Target
    from ashat.verify.performance import DEFAULT_CONCURRENCY, DEFAULT_REQUESTS, DEFAULT_WARMUP
    from ashat.verify.runner import DEFAULT_TIMEOUT_S
    from ashat.verify.security import DEFAULT_MIN_CERT_DAYS
    from ashat.workflow.approve import ApprovalPolicy, DistributionPolicy

    app, approval, dist = AppConfig(), ApprovalPolicy(), DistributionPolicy()
    notify = Target(index=0, events=frozenset({"*"}))
    d = toml_value
    tables = [
        Table("app", False, "How the agents run and health-check the release. Copied into the "
              "signed manifest, so PUBLIC, OMEGA and every mainframe act on the same values."),
        Table("signing", False, "The key ALPHA signs releases with (``ASHAT_SIGNING_KEY`` wins)."),
        Table("verify", False, "Settings shared by the six checks of ``deploy verify``."),
        Table("verify.CHECK", False, "A check's own table (CHECK is health, modules, database, "
              "performance or security): its own ``timeout_s``."),
        Table("verify.api", True, "API Endpoint Test: one real request per entry."),
        Table("verify.database", False, "Database Connection, run on the agent, read-only."),
        Table("verify.performance", False, "Performance Baseline: load on one path."),
        Table("verify.security", False, "Security Scan: the tree on the agent, headers and TLS "
              "from the control side."),
        Table("approval", False, "Who must approve before a release goes to OMEGA."),
        Table("distribution", False, "How OMEGA rolls a release out to the Licensed Mainframes."),
        Table("distribution.analysis", True, "A metric the rollout watches while each wave "
              "bakes: a PromQL query OMEGA evaluates against `prometheus`, and the bound every "
              "sample must keep; one out of bounds halts the rollout."),
        Table("notify", True, "Webhooks posted on deployment state changes."),
        Table("tasks", False, "The tasks a deployment carries out (`deploy push --task`)."),
        Table("tasks.update", True, "Trackers told when a deployment reaches a state: a "
              "comment on each of its tasks there (and a Jira transition), in the background, "
              "retried; a failure is a `notify.failed` event, never a stop."),
    ]  # fmt: skip
    keys = [
        Key("app", "name", "string", "", "The application's name (shown in manifests; the "
            "name a host agent's `--apps` serves it by, so `deploy init` writes lower-case "
            "letters, digits, `-` and `_`)."),
        Key("app", "run", "string", "", "Command the agent starts in the release directory; "
            "must contain `{port}` (also in `$PORT`). Without it no app is supervised."),
        Key("app", "health_path", "string", d(app.health_path), "Must answer 2xx before the "
            "old process is stopped; also what the Health Check asks."),
        Key("app", "health_timeout_s", "number", d(app.health_timeout_s), "Seconds the agent "
            "waits for the new process to become healthy (0-3600]."),
        Key("app", "python", "string", "", "The app's Python (e.g. `.venv/bin/python`, "
            "relative to the release, which `prepare` may build): the Module Load Test "
            "imports with it. Default: the first word of `run` when it names a Python (a "
            "bare name such as `python3` is looked up on the app's `PATH` inside its "
            "sandbox, where the app finds it), else the agent's. With `requirements`: the "
            "interpreter each server builds the environment with (an absolute path or a "
            "command; default: the agent's), one installed on the server: the agent runs it "
            "outside the sandbox, so one in its data directory (a release's file, the "
            "shared directory) or that another user could have written is refused."),
        Key("app", "requirements", "string", "", "A pip requirements file in the tree: "
            "`deploy push` builds the wheels of it and every dependency once (cached by its "
            "content) and ships them in the bundle with a lock of their digests; each server "
            "builds the app's environment from exactly those, offline and hash-checked, and "
            "reuses it while the lock is unchanged. `run` and the hooks find its `python` "
            "first on `$PATH` (`$VIRTUAL_ENV` is set); the Module Load Test imports with it. "
            "It may also name a `pyproject.toml` (its `[project] dependencies`), a PEP 751 "
            "`pylock.toml` (each package whose marker holds for the servers, with its "
            "hashes) or a `uv.lock` (exported with `uv export --locked`: uv on ALPHA, and a "
            "lock out of step with `pyproject.toml` is refused)."),
        Key("app", "platform", "string", "", "The servers' wheel platform tag when it is not "
            "ALPHA's (e.g. `manylinux2014_x86_64`): binary wheels are downloaded for it "
            "instead of built."),
        Key("app", "python_version", "string", "", "The servers' Python (e.g. `3.11`) for "
            "`platform`'s wheels."),
        Key("app", "prepare", "string", "", "Shell command line (`/bin/sh -c`) run in the new "
            "release before anything switches, on every activation and rollback; non-zero "
            "aborts it. Sees `$ASHAT_RELEASE_DIR`, `$ASHAT_SHARED_DIR` and the app's env."),
        Key("app", "migrate", "string", "", "Shell command line run once per release on each "
            "server, after `prepare` and before the switch (schema migrations); non-zero "
            "aborts the activation and the old release keeps serving. Recorded once it "
            "succeeded: a server that dies while it runs runs it again (make it idempotent, "
            "as migration tools are)."),
        Key("app", "rollback_migrate", "string", "", "Shell command line run in a migrated "
            "release's directory when a rollback passes back over it, before the older "
            "release starts; non-zero stops the rollback. If the older release then does not "
            "come up, `migrate` runs again and the release that runs keeps its schema. Like "
            "`migrate`, run again after a server died while it ran."),
        Key("app", "modules", "list of strings", d(list(app.modules)), "Modules the Module "
            "Load Test imports in a fresh interpreter inside the release."),
        Key("signing", "key", "string", "", "Path of the Ed25519 private key, relative to "
            "the project (`deploy init` writes `.ashat/keys/alpha.key`)."),
        Key("verify", "timeout_s", "number", d(DEFAULT_TIMEOUT_S), "Per-check time limit, "
            "unless the check's own table sets one."),
        Key("verify", "app_url", "string", "", "Where the app answers when it sits behind a "
            "proxy; default: PUBLIC's host and the port the agent gave the app."),
        Key("verify", "disabled", "list of strings", "[]", "Checks switched off: a release "
            "is verified when every other check passed for it (PUBLIC's signed statement "
            "names them; a root of trust's `required_checks` cannot be switched off)."),
        Key("verify.CHECK", "timeout_s", "number", "`[verify] timeout_s`", "This check's "
            "time limit."),
        Key("verify.api", "method", "string", '"GET"', "HTTP method."),
        Key("verify.api", "path", "string", "", "Path on the app, starting with `/` (required)."),
        Key("verify.api", "json", "any", "", "Request body, sent as JSON."),
        Key("verify.api", "headers", "table", "", "Request headers."),
        Key("verify.api", "expect_status", "integer", "200", "Expected HTTP status."),
        Key("verify.api", "expect_keys", "list of strings", "", "Keys the JSON object "
            "answered must have."),
        Key("verify.api", "schema", "table", "", "A JSON Schema the answer must satisfy."),
        Key("verify.api", "schema_file", "string", "", "The same, from a JSON file in the "
            "project."),
        Key("verify.database", "url", "string", "", "`sqlite:///path` (relative to the "
            "release) or `postgresql://…`; prefer `url_env`."),
        Key("verify.database", "url_env", "string", "", "Name of a variable of the agent's "
            "`--app-env` holding the URL (the password never leaves the server)."),
        Key("verify.database", "schema_version_query", "string", "", "A query whose first "
            "column is the schema version, reported (and compared)."),
        Key("verify.database", "expect_schema_version", "string or integer", "", "Fail "
            "unless the query answers this."),
        Key("verify.performance", "path", "string", "", "Path to load (required to run)."),
        Key("verify.performance", "requests", "integer", d(DEFAULT_REQUESTS), "How many "
            "requests p95 is judged over (at least 20)."),
        Key("verify.performance", "warmup", "integer", d(DEFAULT_WARMUP), "Requests sent "
            "first and not counted."),
        Key("verify.performance", "concurrency", "integer", d(DEFAULT_CONCURRENCY), "How "
            "many at once."),
        Key("verify.performance", "max_p95_ms", "number", "", "Fail when p95 exceeds this."),
        Key("verify.performance", "max_error_rate", "number", "0", "Fail when more requests "
            "fail than this ratio (0-1)."),
        Key("verify.performance", "max_regression", "number", "", "Fail when p95 is worse "
            "than the baseline (the median of the last 5 passed runs) by more than this ratio "
            "(0.5 = 50 %), measured twice: one slow run alone does not fail."),
        Key("verify.security", "allow", "list of strings", "[]", "Globs of files whose "
            "findings are accepted."),
        Key("verify.security", "advisories", "string", "", "A directory of OSV JSON files "
            "the release ships (relative to it), checked besides PUBLIC's own snapshot "
            "(`ashat advisories update`); never a path on PUBLIC."),
        Key("verify.security", "require_headers", "list of strings", "[]", "Headers the "
            "app must send."),
        Key("verify.security", "path", "string", "`[app] health_path`", "Where the headers "
            "are fetched."),
        Key("verify.security", "min_cert_days", "number", d(DEFAULT_MIN_CERT_DAYS), "For an "
            "https PUBLIC: fail when its certificate expires sooner."),
        Key("approval", "required", "integer", d(approval.required), "Approvals needed "
            "(1-50)."),
        Key("approval", "approvers", "list of strings", "[]", "Who may approve; empty: "
            "anyone."),
        Key("approval", "allow_self_approval", "boolean", d(approval.allow_self_approval),
            "Whether whoever pushed may approve."),
        Key("distribution", "waves", "list of integers", d(dist.waves), "Cumulative "
            "percentages of the licensed fleet, increasing, ending at 100; `\"pause\"` "
            "between two holds the rollout there until `deploy resume`."),
        Key("distribution", "max_failure_ratio", "number", d(dist.max_failure_ratio),
            "Failure budget per wave (0-1); exceeding it halts the rollout."),
        Key("distribution", "wave_timeout_s", "number", d(dist.wave_timeout_s), "Seconds a "
            "wave may take; silence counts as failure. The release's rollbacks (`deploy "
            "rollback`, automatic) keep it."),
        Key("distribution", "auto_rollback", "boolean", d(dist.auto_rollback), "When the "
            "budget breaks, send the previous release to every mainframe that took the new "
            "one, and put OMEGA back on it."),
        Key("distribution", "channel", "string", d(dist.channel), "The channel a license "
            "must cover."),
        Key("distribution", "regions", "list of strings", "[]", "OMEGA regions, in order "
            "(each configured with `deploy configure omega URL NAME --region R`): an approved "
            "release goes to each region's OMEGA in turn, with the same waves and budget "
            "inside each, the next once the one before completed; a region that fails halts "
            "the rest. Empty: the one OMEGA."),
        Key("distribution", "to", "string", "", "A label selector (`ring=pilot`, `site in "
            "(berlin,paris)`, `customer!=acme`, `gpu`, `!gpu`; comma-separated, all must "
            "hold): only the licensed mainframes whose labels match are released to; none "
            "matching is refused with the count and nothing starts. `deploy approve --to` "
            "replaces it. Labels come from the license (`ashat license issue --label`), from "
            "OMEGA (`ashat fleet label`) and from facts (`id`, `customer`, `region`, "
            "`channel`, `os`, `arch`, `python`, `ashat`). Empty: every mainframe."),
        Key("distribution", "rings", "list of strings", "[]", "Label selectors whose "
            "mainframes go first, each ring one wave, in order (`[\"ring=pilot\", "
            "\"ring=early\"]`), with the same budget, bake and analysis as every wave; then "
            "`waves` take the rest. `\"pause\"` gates in `waves` count after the rings."),
        Key("distribution", "bake_s", "number", "0", "Seconds each wave bakes once all its "
            "mainframes installed, before the next starts (or the rollout ends), while the "
            "analysis is evaluated."),
        Key("distribution", "prometheus", "string", "", "The Prometheus OMEGA asks for the "
            "analysis (`http(s)://host:9090`), as OMEGA reaches it."),
        Key("distribution.analysis", "name", "string", "", "A short name, shown when it "
            "fails."),
        Key("distribution.analysis", "query", "string", "", "A PromQL expression giving a "
            "number or an instant vector (each series is judged); one Prometheus cannot parse "
            "is refused when the rollout starts, and no data never passes."),
        Key("distribution.analysis", "max", "number", "", "The highest value allowed."),
        Key("distribution.analysis", "min", "number", "", "The lowest value allowed (`max`, "
            "`min` or both)."),
        Key("notify", "url", "string", "", "Where to post (http or https); or `url_env`."),
        Key("notify", "url_env", "string", "", "Name of the variable holding the URL."),
        Key("notify", "events", "list of strings", '["*"]', "Deployment states to post, or "
            '`["*"]`.'),
        Key("notify", "format", "string", d(notify.format), '`"json"`, `"slack"`, `"teams"` '
            '(an Adaptive Card for a Microsoft Teams Workflows webhook), `"email"` or `"sms"`.'),
        Key("notify", "secret", "string", "", "HMAC-SHA256 key signing the body; prefer "
            "`secret_env`."),
        Key("notify", "secret_env", "string", "", "Name of the variable holding the secret."),
        Key("notify", "retries", "integer", d(notify.retries), "Attempts after the first "
            "(0-10)."),
        Key("notify", "timeout_s", "number", d(notify.timeout_s), "Seconds per attempt."),
        Key("tasks", "required", "boolean", "false", "Refuse a push without `--task`."),
        Key("tasks.update", "tracker", "string", "", '`"jira"`, `"github"` or `"gitlab"`: '
            "which of the deployment's tasks it comments on."),
        Key("tasks.update", "url", "string", "", "Jira: the site (required); GitHub: its "
            "API (default `https://api.github.com`); GitLab: default the task URL's host."),
        Key("tasks.update", "token_file", "string", "", "The file holding the API token "
            "(read on the machine that sends; never in ashat.toml)."),
        Key("tasks.update", "user", "string", "", "Jira: the account's email, for Basic "
            "auth with an API token (without it: Bearer, a personal access token)."),
        Key("tasks.update", "events", "list of strings",
            '["verified", "approved", "completed", "rolled_back"]', "Deployment states to "
            "comment on."),
        Key("tasks.update", "transition", "string", "", "Jira: a transition id to apply "
            "too."),
        Key("tasks.update", "retries", "integer", "3", "Retries after the first attempt."),
        Key("tasks.update", "timeout_s", "number", "10", "Seconds per attempt."),
        Key("notify", "smtp", "string", "", 'Email: `"HOST:PORT"` of the SMTP server '
            '(`format = "email"`; no `url` then).'),
        Key("notify", "tls", "string", '"starttls"', 'Email: `"starttls"`, `"tls"` '
            '(implicit, port 465) or `"none"` (a server on loopback only).'),
        Key("notify", "from", "string", "", "Email: the sender's address; SMS: the sending "
            "number (E.164, `+15005550006`)."),
        Key("notify", "to", "list of strings", "", "Email: the recipients' addresses; SMS: "
            "their numbers."),
        Key("notify", "account_sid_env", "string", "", 'SMS (`format = "sms"`, Twilio\'s '
            "Messages API; `url` its base, default `https://api.twilio.com`): the variable "
            "holding the account SID."),
        Key("notify", "auth_token_env", "string", "", "SMS: the variable holding the auth "
            "token."),
        Key("notify", "username_env", "string", "", "Email: the variable holding the SMTP "
            "login (with `password_env`); none: no login."),
        Key("notify", "password_env", "string", "", "Email: the variable holding its "
            "password."),
        Key("notify", "ca_cert", "string", "", "Email: a CA certificate to trust for the "
            "SMTP server's TLS (else the system's)."),
    ]  # fmt: skip
    return tables, keys


def all_tables() -> list[Table]:
    return _build()[0]


def all_keys() -> list[Key]:
    return _build()[1]


def heading(table: Table) -> str:
    return f"[[{table.name}]]" if table.array else f"[{table.name}]"


def render_markdown() -> str:
    """The reference section of docs/guide.md, between :data:`BEGIN` and :data:`END`."""
    all_tables, all_keys = _build()
    out = [BEGIN, ""]
    for t in all_tables:
        out += [f"#### `{heading(t)}`", "", t.doc.replace("``", "`"), ""]
        out += ["| key | type | default | what it does |", "|---|---|---|---|"]
        for k in all_keys:
            if k.table == t.name:
                default = (
                    k.default if k.default.startswith("`") or not k.default else (f"`{k.default}`")
                )
                out.append(f"| `{k.name}` | {k.type} | {default or '—'} | {k.doc} |")
        out.append("")
    out.append(END)
    return "\n".join(out) + "\n"


def generated_section(text: str) -> str | None:
    """The generated section of a document (markers included), or None."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return None
    return text[start : end + len(END)] + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--check"] and len(args) == 2:
        from pathlib import Path

        section = generated_section(Path(args[1]).read_text(encoding="utf-8"))
        if section != render_markdown():
            print(f"{args[1]}: the configuration reference is out of date; regenerate it with "
                  "python -m ashat.config_reference", file=sys.stderr)  # fmt: skip
            return 1
        return 0
    if args:
        print("usage: python -m ashat.config_reference [--check FILE]", file=sys.stderr)
        return 2
    sys.stdout.write(render_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
