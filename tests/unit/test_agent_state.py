"""The agent's ``state.json`` decisions that need no process: a switch the history lacks."""

from __future__ import annotations

from ashat.agent.state import Activation, AgentState


def _state(*ids: str) -> AgentState:
    return AgentState(history=[Activation(i, "2026-12-07T00:00:00Z", "activate") for i in ids])


def test_a_switch_the_links_show_and_the_history_lacks_is_told_apart() -> None:
    # nothing lost: current is the last activation
    assert _state("a", "b").lost_switch("b", "a") is None
    assert _state().lost_switch(None, None) is None
    # forward: the release that ran became previous
    assert _state("a", "b").lost_switch("c", "b") == ("activate", None)
    # back: the release that ran is neither current nor previous, it was rolled back
    assert _state("a", "b").lost_switch("a", None) == ("rollback", "b")
    assert _state("a", "b", "c").lost_switch("a", None) == ("rollback", "c")
    # a history lost whole (a corrupt state.json set aside): current was activated
    assert _state().lost_switch("a", None) == ("activate", None)
