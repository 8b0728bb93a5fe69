"""The operations behind the verbs, shared by every front end (the ``deploy`` CLI, ``ashat
serve``): each wires a project's configuration, its control store, the transport to its
servers and a workflow service together, and returns a result the front end only shows.

::

    project.py        Project: root, ashat.toml, store, configured servers, a workflow as a user
    notifications.py  the workflow's observer: [[notify]] webhooks, delivered in the background
    push.py           build, sign and send a tree to PUBLIC (needs a local tree: CLI only)
    verify.py         the checks against PUBLIC
    approve.py        an approval; with enough, the release to OMEGA and following the rollout
    rollback.py       PUBLIC, or OMEGA and the fleet, back on the release before
    status.py         one deployment with its checks, approvals, events and rollout; the fleet
    servers.py        configure and list the tiers' servers
    users.py          users, roles and API tokens

Nothing here prints, reads a terminal or knows HTTP; progress is reported through optional
callbacks. No module here imports ``ashat.cli`` or ``ashat.api``.
"""
