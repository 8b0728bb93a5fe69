"""The state machine as a Mermaid ``stateDiagram-v2``, drawn from :data:`TRANSITIONS`.

docs/architecture.md holds its output between markers, and a test fails when the two
differ, so the picture cannot drift from the table. ``python -m ashat.workflow.diagram``
prints it.
"""

from __future__ import annotations

from ashat.workflow.states import TERMINAL, TRANSITIONS, State

BEGIN = "    %% BEGIN GENERATED (python -m ashat.workflow.diagram)"
END = "    %% END GENERATED"

# The verb or event that makes each move, shown on the arrow.
LABELS: dict[tuple[State, State], str] = {
    (State.PUSHING, State.PUSHED): "staged and activated on PUBLIC",
    (State.PUSHED, State.VERIFYING): "deploy verify",
    (State.VERIFIED, State.VERIFYING): "deploy verify (again)",
    (State.VERIFICATION_FAILED, State.VERIFYING): "deploy verify (again)",
    (State.VERIFYING, State.VERIFIED): "all checks passed",
    (State.VERIFYING, State.VERIFICATION_FAILED): "a check failed",
    (State.VERIFIED, State.APPROVED): "deploy approve (policy met)",
    (State.APPROVED, State.RELEASING): "send to OMEGA",
    (State.RELEASING, State.DISTRIBUTING): "counter-signed, rollout started",
    (State.DISTRIBUTING, State.COMPLETED): "every wave done",
    (State.DISTRIBUTING, State.DISTRIBUTION_FAILED): "failure budget broken",
    (State.DISTRIBUTION_FAILED, State.ROLLED_BACK): "auto_rollback, or deploy rollback",
}


def mermaid() -> str:
    """The diagram's lines, from ``[*]`` through every transition to the terminal states."""
    lines = ["stateDiagram-v2", BEGIN, f"    [*] --> {State.PUSHING.value}: deploy push"]
    for src in State:
        for dst in sorted(TRANSITIONS[src]):
            label = LABELS.get((src, dst))
            if label is None and dst in (State.CANCELLED, State.ROLLED_BACK):
                label = "deploy cancel" if dst is State.CANCELLED else "deploy rollback"
            if label is None and dst is State.FAILED:
                label = "unrecoverable error"
            lines.append(f"    {src.value} --> {dst.value}" + (f": {label}" if label else ""))
    for state in sorted(TERMINAL):
        lines.append(f"    {state.value} --> [*]")
    lines.append(END)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(mermaid(), end="")
