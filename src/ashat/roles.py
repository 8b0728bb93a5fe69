"""The three servers, assembled: PUBLIC is the agent alone; OMEGA is the agent with the fleet's
routes and rollout controller (:mod:`ashat.fleet.omega_routes`); a mainframe is the agent with
its pull loop (:mod:`ashat.fleet.mainframe`) running beside the server.

This is the one module that knows both :mod:`ashat.agent` and :mod:`ashat.fleet`: the fleet is
built over the agent, and the agent never imports the fleet (``lint-imports`` keeps it so).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


def run_role(
    config: AgentConfig,
    announce: Callable[[str], None],
    apps: Mapping[str, AgentConfig] | None = None,
) -> None:
    """Serve the role until a signal (:func:`ashat.agent.runner.run_agent`); a mainframe
    runs its pull loop beside the server, one per app of a host agent (``apps``), each
    with its own OMEGA and license."""
    from ashat.agent.runner import run_agent

    background: Callable[[Agent], Background] | None = None
    if config.role is AgentRole.MAINFRAME:
        from ashat.fleet.mainframe import Mainframe, omega_tls

        # a bad --omega-ca-cert fails before anything starts
        verify = {
            name: omega_tls(c.mainframe)
            for name, c in (apps or {"": config}).items()
            if c.mainframe is not None
        }

        def background(agent: Agent) -> Background:
            mainframe = agent.config.mainframe
            assert mainframe is not None
            return Mainframe(agent, mainframe, verify=verify[agent.config.app_name or ""]).run

    run_agent(config, announce, extension=extension_for(config), background=background, apps=apps)
