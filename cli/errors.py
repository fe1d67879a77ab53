"""Every command's mistakes as one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from errors import ClientError, ConfigError


def one_line(callback: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except ClientError as refusal:
            problems = "; ".join(f"{name}: {' '.join(p)}" for name, p in refusal.fields.items())
            raise click.ClickException(refusal.message + (f" ({problems})" if problems else "")) from None
        except ConfigError as error:
            raise click.ClickException(f"configuration error: {error}") from None
        except IntegrityError as error:
            raise click.ClickException(f"refused by the database: {_first_line(error.orig)}") from None
        except (OperationalError, DBAPIError) as error:
            raise click.ClickException(f"the database did not answer: {_first_line(error.orig)} "
                                       "(check DATABASE_URL, and that the server is up)") from None

    return wrapped


def _first_line(error: object) -> str:
    return str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__


def guard(group: click.Group) -> None:
    """`one_line` around every command of `group`, its subgroups' included."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            guard(command)
        elif command.callback is not None:
            command.callback = one_line(command.callback)
