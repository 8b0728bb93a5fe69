"""The three servers, assembled: PUBLIC is the agent alone; OMEGA is the agent with the fleet's
routes and rollout controller (:mod:`ashat.fleet.omega_routes`); a mainframe is the agent with
its pull loop (:mod:`ashat.fleet.mainframe`) running beside the server.

This is the one module that knows both :mod:`ashat.agent` and :mod:`ashat.fleet`: the fleet is
built over the agent, and the agent never imports the fleet (``lint-imports`` keeps it so).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ashat.agent.config import AgentConfig, AgentRole

if TYPE_CHECKING:
    from ashat.agent.core import Agent
    from ashat.agent.runner import Background
    from ashat.agent.server import RoleExtension


def omega_extension(agent: Agent) -> RoleExtension:
    """OMEGA's fleet service and routes over ``agent`` (role omega). Raises
    :class:`~ashat.store.db.StoreError` if its fleet database cannot be opened."""
    from ashat.fleet.omega import Omega
    from ashat.fleet.omega_routes import OmegaRoutes

    config = agent.config
    assert config.omega_key is not None  # AgentConfig requires it for role omega
    omega = Omega(agent, config.omega_key, config.license_trusted)
    agent.pinned = omega.pinned  # keep what the fleet may need to roll back to
    return OmegaRoutes(agent, omega, config.poll_timeout_s)


def extension_for(config: AgentConfig) -> Callable[[Agent], RoleExtension] | None:
    return omega_extension if config.role is AgentRole.OMEGA else None


def run_role(config: AgentConfig, announce: Callable[[str], None]) -> None:
    """Serve the role until a signal (:func:`ashat.agent.runner.run_agent`); a mainframe
    runs its pull loop beside the server."""
    from ashat.agent.runner import run_agent

    background: Callable[[Agent], Background] | None = None
    if config.mainframe is not None:
        from ashat.fleet.mainframe import Mainframe, omega_tls

        mainframe = config.mainframe
        verify = omega_tls(mainframe)  # a bad --omega-ca-cert fails before anything starts

        def background(agent: Agent) -> Background:
            return Mainframe(agent, mainframe, verify=verify).run

    run_agent(config, announce, extension=extension_for(config), background=background)
