"""docs/architecture.md matches the code: the state diagram is the transition table, the
state table names every state and the tiers each holds, the route tables every route."""

from __future__ import annotations

import re
from pathlib import Path

from ashat.workflow import diagram
from ashat.workflow.states import LEASED_STATES, TRANSITIONS, State

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
SRC = REPO / "src" / "ashat"


def state_diagram() -> str:
    m = re.search(r"```mermaid\n(stateDiagram-v2\n.*?)```", DOC, re.S)
    assert m, "docs/architecture.md has no stateDiagram-v2 block"
    return m.group(1)


def test_the_diagram_is_the_generated_one() -> None:
    assert state_diagram() == diagram.mermaid(), (
        "regenerate the diagram with python -m ashat.workflow.diagram"
    )


def test_the_diagrams_arrows_are_the_transition_table() -> None:
    arrows = set(re.findall(r"^\s*(\w+) --> (\w+)", state_diagram(), re.M))
    table = {(src.value, dst.value) for src, nxt in TRANSITIONS.items() for dst in nxt}
    assert arrows == table
    ends = set(re.findall(r"^\s*(\w+) --> \[\*\]", state_diagram(), re.M))
    assert ends == {s.value for s, nxt in TRANSITIONS.items() if not nxt}


def test_the_state_table_names_every_state_and_its_lease() -> None:
    rows = dict(re.findall(r"^\| `(\w+)` \| [^|]+ \| *(\w*) *\|$", DOC, re.M))
    assert set(rows) == {s.value for s in State}
    for tier, states in LEASED_STATES.items():
        held = {s for s, holds in rows.items() if holds == tier.upper()}
        assert held == {s.value for s in states}, tier


def routes_in(path: Path) -> set[str]:
    pairs = re.findall(r'Route\("([^"]+)", self\.\w+, methods=\["(\w+)"\]\)', path.read_text())
    return {f"{method} {route}" for route, method in pairs}


def test_the_route_tables_list_every_agent_and_omega_route() -> None:
    documented = set(re.findall(r"^\| `((?:GET|POST|PUT|DELETE) /[^`]+)` \|", DOC, re.M))
    agent = routes_in(SRC / "agent" / "server.py")
    omega = routes_in(SRC / "fleet" / "omega_routes.py")
    assert len(agent) >= 10 and len(omega) >= 9  # the scan finds them
    assert agent | omega == documented


def test_the_control_planes_route_table_lists_every_route_of_ashat_serve() -> None:
    """A review: docs/control-plane.md left out pause, resume, abort and retry."""
    from ashat.api.routes import ENDPOINTS

    table = (REPO / "docs" / "control-plane.md").read_text(encoding="utf-8")
    rows = "\n".join(line for line in table.splitlines() if line.startswith("| `"))
    shown = re.sub(r"\{[^}]*\}", "{}", rows)

    def documented(path: str) -> bool:
        path = re.sub(r"\{[^}]*\}", "{}", path)
        parent, _, last = path.rpartition("/")
        return (
            f"{path}`" in shown
            or f"{path}?" in shown
            or f"{path}," in shown
            or (
                f"{parent}/" in shown and f"`/{last}`" in shown  # "…/pause`, `/resume`"
            )
        )

    missing = [f"{e.method} {e.path}" for e in ENDPOINTS if not documented(e.path)]
    assert not missing, f"docs/control-plane.md does not list {missing}"


def test_the_tracker_example_in_control_plane_md_is_one_the_code_takes() -> None:
    """A review: its GitLab table had no ``url``, which the code refuses (a GitLab task is
    sent only to the site named)."""
    import tomllib

    from ashat.notify.trackers import parse_updates

    text = (REPO / "docs" / "control-plane.md").read_text(encoding="utf-8")
    start = text.index("```toml\n[[tasks.update]]")
    example = text[start + len("```toml\n") : text.index("```", start + 3)]
    updates = parse_updates(tomllib.loads(example)["tasks"]["update"])
    assert [u.tracker for u in updates] == ["jira", "github", "gitlab"]
