"""``ashat users``: who may use ``ashat serve``, with which role, and their API tokens.

The work is :mod:`ashat.ops.users`; these commands act on the project's control store
(run them where the server's store is, or with ``ASHAT_DB``).
"""

from __future__ import annotations

import click

from ashat.cli.context import Project
from ashat.cli.output import OK, AshatGroup, emit, json_option

ROLE_CHOICE = click.Choice(["viewer", "deployer", "approver", "admin"])


@click.group("users", cls=AshatGroup)
def users_group() -> None:
    """Users and roles of the control-plane API (viewer < deployer < approver < admin)."""


@users_group.command("add")
@click.argument("name")
@click.option("--role", type=ROLE_CHOICE, required=True, help="What the user may do.")
@json_option
def users_add(name: str, role: str) -> None:
    """Add a user (then give them a token with 'ashat users token NAME')."""
    from ashat.ops.users import add_user

    user = add_user(Project.find(), name, role)

    def human() -> None:
        click.echo(f"{OK} user {user.name} added as {user.role}")
        click.echo(f"   next: ashat users token {user.name}")

    emit({"user": user.to_json()}, human)


@users_group.command("token")
@click.argument("name")
@json_option
def users_token(name: str) -> None:
    """Issue a new API token for NAME (shown once; it replaces the old one)."""
    from ashat.ops.users import issue_token

    user, token = issue_token(Project.find(), name)

    def human() -> None:
        click.echo(token)
        click.echo(
            f"{OK} new token for {user.name} ({user.role}); it is shown only now, and any "
            "older token of this user no longer works",
            err=True,
        )

    emit({"user": user.to_json(), "token": token}, human)


@users_group.command("list")
@json_option
def users_list() -> None:
    """Users, their roles, and whether they have a token."""
    from ashat.ops.users import list_users

    users = list_users(Project.find())

    def human() -> None:
        if not users:
            click.echo("No users. Add one: ashat users add NAME --role admin")
            return
        width = max(len(u.name) for u in users)
        for u in users:
            token = f"token issued {u.token_issued_at[:19]}" if u.token_issued_at else "no token"
            click.echo(f"  {u.name:<{width}}  {u.role:<9} {token}")

    emit({"users": [u.to_json() for u in users]}, human)


@users_group.command("remove")
@click.argument("name")
@json_option
def users_remove(name: str) -> None:
    """Remove a user (their token stops working at once)."""
    from ashat.ops.users import remove_user

    user = remove_user(Project.find(), name)
    emit({"removed": user.to_json()}, lambda: click.echo(f"{OK} user {user.name} removed"))
