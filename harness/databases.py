"""A PostgreSQL database of the caller's own beside the shared server's others: created, dropped.

Nothing here touches any other database: the admin connection only creates, drops and
reads pg_stat_activity / pg_stat_database for this one.
"""

from __future__ import annotations

import os
import uuid
from types import TracebackType

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

#: The admin database beside which scratch databases are created.
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def scratch_name(label: str) -> str:
    """A database name no other run uses."""
    return f"fx_{label}_{uuid.uuid4().hex[:10]}"


class ScratchDatabase:
    """`with ScratchDatabase(admin_url, name) as db:` creates it; leaving drops it WITH (FORCE)."""

    def __init__(self, admin_url: str, name: str) -> None:
        self.name = name
        self.admin: Engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        #: The statement that created it, as a report prints it.
        self.command = f'psql -c \'CREATE DATABASE "{name}"\'  (dropped WITH (FORCE) at the end)'

    def __enter__(self) -> ScratchDatabase:
        try:
            with self.admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        except BaseException:
            self.admin.dispose()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.drop()

    def drop(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()

    def server_version(self) -> str:
        with self.admin.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar())

    def transactions(self) -> int:
        """Commits + rollbacks of this database so far."""
        with self.admin.connect() as conn:
            return int(conn.execute(text("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                                         "WHERE datname = :db"), {"db": self.name}).scalar_one())

    def terminate_backends(self, spare_application_name: str) -> int:
        """pg_terminate_backend of every connection to this database but the admin's and the spared one's."""
        with self.admin.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :db "
                "AND pid <> pg_backend_pid() AND coalesce(application_name, '') <> :spared"
            ), {"db": self.name, "spared": spare_application_name}).scalar_one())

    def backend_clients(self) -> dict[int, str]:
        """PostgreSQL backend pid -> application_name of the client it serves ('?' if none)."""
        with self.admin.connect() as conn:
            rows = conn.execute(text("SELECT pid, application_name FROM pg_stat_activity WHERE datname = :db"),
                                {"db": self.name}).all()
        return {pid: name or "?" for pid, name in rows}
