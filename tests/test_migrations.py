"""The migrations build exactly the models' schema, run both ways, and the database guards the money.

Autogenerate's diff covers tables, columns, types, nullability, primary and foreign keys,
unique constraints and indexes. It does not look at CHECK constraints or at partial
indexes' predicates, so those are compared here from the reflected schema as well.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, func, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from infra import migrate
from infra.database import make_engine
from models import Base, accounts, balances, ledger_entries
from models.base import utcnow
from services.accounts import HOUSE_ACCOUNT_ID, open_account

TABLES = {table.name for table in Base.metadata.sorted_tables}
#: Created by the migration on PostgreSQL only; the models cannot describe them.
PG_FUNCTIONS = {"ledger_posting_balanced", "outbox_messages_notify", "exchange_state_counts_track"}
PG_TRIGGERS = {("ledger_entries", "ledger_posting_balanced"), ("outbox_messages", "outbox_messages_notify"),
               ("exchanges", "exchange_state_counts_rows"), ("exchanges", "exchange_state_counts_moves")}


def alembic(engine: Engine, action: str, revision: str) -> None:
    with engine.begin() as conn:
        config = migrate.alembic_config(engine)
        config.attributes["connection"] = conn
        getattr(command, action)(config, revision)


def schema_diff(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(context, Base.metadata)


def _predicate(where: Any) -> str:
    # PostgreSQL gives the predicate back wrapped in parentheses and re-spaced; the
    # difference is notation, not meaning, so both sides are compared without them.
    return re.sub(r"[\s()]+", " ", str(where)).strip().lower()


def named_objects(engine: Engine) -> dict[str, set[tuple[str, ...]]]:
    """Constraint and index names per table, with partial-index predicates, as reflected."""
    inspector = inspect(engine)
    found: dict[str, set[tuple[str, ...]]] = {}
    for table in TABLES:
        objects = {("pk", inspector.get_pk_constraint(table)["name"])}
        objects |= {("fk", fk["name"]) for fk in inspector.get_foreign_keys(table)}
        objects |= {("uq", uq["name"]) for uq in inspector.get_unique_constraints(table)}
        objects |= {("ck", ck["name"]) for ck in inspector.get_check_constraints(table)}
        for index in inspector.get_indexes(table):
            # PostgreSQL reports the unique constraint's backing index as an index too.
            if index.get("duplicates_constraint"):
                continue
            options = index.get("dialect_options", {})
            where = options.get(f"{engine.dialect.name}_where")
            objects.add(("ix", index["name"], _predicate(where) if where is not None else ""))
        found[table] = objects
    return found


def model_objects(dialect: str) -> dict[str, set[tuple[str, ...]]]:
    kinds = {"PrimaryKeyConstraint": "pk", "ForeignKeyConstraint": "fk", "UniqueConstraint": "uq",
             "CheckConstraint": "ck"}
    expected: dict[str, set[tuple[str, ...]]] = {}
    for table in Base.metadata.sorted_tables:
        objects = {(kinds[type(c).__name__], str(c.name)) for c in table.constraints}
        for index in table.indexes:
            where = index.dialect_kwargs.get(f"{dialect}_where")
            objects.add(("ix", str(index.name), _predicate(where) if where is not None else ""))
        expected[table.name] = objects
    return expected


def test_migrated_database_matches_the_models_exactly(engine: Engine) -> None:
    assert schema_diff(engine) == []


def test_migrated_constraints_and_indexes_carry_the_models_names_and_predicates(engine: Engine) -> None:
    assert named_objects(engine) == model_objects(engine.dialect.name)


def test_migrated_sqlite_check_constraints_are_the_models_own_text(sqlite_engine: Engine) -> None:
    # SQLite keeps a CHECK's text verbatim, so it can be compared exactly. (PostgreSQL
    # stores a rewritten form, `amount > 0::numeric`; there the names above must do.)
    inspector = inspect(sqlite_engine)
    for table in Base.metadata.sorted_tables:
        reflected = {ck["name"]: ck["sqltext"] for ck in inspector.get_check_constraints(table.name)}
        expected = {str(c.name): str(c.sqltext) for c in table.constraints if type(c).__name__ == "CheckConstraint"}
        assert reflected == expected, table.name


def house_accounts(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(accounts.c.id, accounts.c.kind)).all())


def assert_fully_migrated(engine: Engine) -> None:
    assert set(inspect(engine).get_table_names()) >= TABLES
    assert schema_diff(engine) == []
    assert house_accounts(engine) == [(HOUSE_ACCOUNT_ID, "house")]


def assert_fully_downgraded(engine: Engine) -> None:
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 0


def pg_routines(engine: Engine) -> tuple[set[str], set[tuple[str, str]]]:
    with engine.connect() as conn:
        functions = set(conn.execute(text(
            "SELECT proname FROM pg_proc JOIN pg_namespace n ON n.oid = pronamespace WHERE nspname = 'public'"
        )).scalars())
        triggers = {tuple(row) for row in conn.execute(text(
            "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal"
        ))}
    return functions, triggers


def test_sqlite_migrations_go_up_down_and_up_again_on_a_fresh_file(tmp_path: Any) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        alembic(engine, "upgrade", "head")
        assert_fully_migrated(engine)
        alembic(engine, "downgrade", "base")
        assert_fully_downgraded(engine)
        alembic(engine, "upgrade", "head")
        assert_fully_migrated(engine)
    finally:
        engine.dispose()


@pytest.fixture
def fresh_pg_engine(pg_engine: Engine) -> Iterator[Engine]:
    """An empty PostgreSQL database of this test's own, dropped after it."""
    name = f"fx_migrations_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_engine.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(pg_engine.url.set(database=name).render_as_string(hide_password=False))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.postgres
def test_postgresql_migrations_go_up_down_and_up_again_on_a_fresh_database(fresh_pg_engine: Engine) -> None:
    alembic(fresh_pg_engine, "upgrade", "head")
    assert_fully_migrated(fresh_pg_engine)
    assert pg_routines(fresh_pg_engine) == (PG_FUNCTIONS, PG_TRIGGERS)

    alembic(fresh_pg_engine, "downgrade", "base")
    assert_fully_downgraded(fresh_pg_engine)
    assert pg_routines(fresh_pg_engine) == (set(), set())

    alembic(fresh_pg_engine, "upgrade", "head")
    assert_fully_migrated(fresh_pg_engine)
    assert pg_routines(fresh_pg_engine) == (PG_FUNCTIONS, PG_TRIGGERS)


def test_upgrading_an_up_to_date_database_changes_nothing(engine: Engine) -> None:
    migrate.upgrade(engine)
    assert schema_diff(engine) == []
    assert house_accounts(engine) == [(HOUSE_ACCOUNT_ID, "house")]


# --- the database's own guards ---------------------------------------------------------


def entry(posting: uuid.UUID, account: uuid.UUID, currency: str, amount: str) -> dict[str, Any]:
    return {"posting_id": posting, "account_id": account, "currency": currency, "amount": Decimal(amount),
            "kind": "test", "created_at": utcnow()}


def ledger_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(ledger_entries)).scalar_one()


@pytest.mark.postgres
@pytest.mark.parametrize(
    "entries",
    [
        [("CAD", "10.00")],
        [("CAD", "10.00"), ("CAD", "-9.99")],
        [("CAD", "10.00"), ("USD", "-10.00")],
    ],
    ids=["one-sided", "off-by-a-cent", "balanced-only-across-currencies"],
)
def test_ledger_rejects_an_unbalanced_posting_at_commit(
    pg_engine: Engine, entries: list[tuple[str, str]]
) -> None:
    customer = open_account(pg_engine, "Ledger", {})
    before = ledger_count(pg_engine)
    posting = uuid.uuid4()
    accounts_in_turn = [customer, HOUSE_ACCOUNT_ID]

    with pg_engine.connect() as conn:
        conn.begin()
        for i, (currency, amount) in enumerate(entries):
            # Each INSERT succeeds: the trigger is deferred to commit.
            conn.execute(insert(ledger_entries), entry(posting, accounts_in_turn[i % 2], currency, amount))
        with pytest.raises(IntegrityError, match="does not balance"):
            conn.commit()

    assert ledger_count(pg_engine) == before


@pytest.mark.postgres
def test_ledger_accepts_a_posting_that_balances_by_commit_time(pg_engine: Engine) -> None:
    customer = open_account(pg_engine, "Ledger", {})
    before = ledger_count(pg_engine)
    posting = uuid.uuid4()

    with pg_engine.begin() as conn:
        conn.execute(insert(ledger_entries), entry(posting, customer, "CAD", "10.00"))
        # Unbalanced between these two statements; only the state at commit counts.
        conn.execute(insert(ledger_entries), entry(posting, HOUSE_ACCOUNT_ID, "CAD", "-10.00"))

    assert ledger_count(pg_engine) == before + 2


@pytest.mark.parametrize("column", ["available", "held"])
def test_a_negative_balance_is_rejected_by_the_database(engine: Engine, column: str) -> None:
    customer = open_account(engine, "Overdraft", {"CAD": Decimal("10.00")})

    with pytest.raises(IntegrityError, match=f"{column}_not_negative"), engine.begin() as conn:
        conn.execute(
            update(balances)
            .where(balances.c.account_id == customer, balances.c.currency == "CAD")
            .values({column: Decimal("-0.01")})
        )

    with engine.connect() as conn:
        row = conn.execute(
            select(balances.c.available, balances.c.held).where(balances.c.account_id == customer)
        ).one()
    assert tuple(row) == (Decimal("10.00"), Decimal("0"))
