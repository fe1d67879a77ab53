"""A newcomer's first run: `make run PORT=...`, the demo credentials on every start, the customers
and their keys from the CLI, and one clear line for a bad setting."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.net import free_private_port
from harness.processes import PROJECT_ROOT, Process, clean_environment

FLASK = str(Path(sys.executable).with_name("flask"))
DEMO_LINE = re.compile(r"^(\w+ \w+): account ([0-9a-f-]{36})  login (\S+) / \S+  API key (fxk_\S+)$", re.MULTILINE)

pytestmark = pytest.mark.process


def test_make_run_takes_the_port_from_the_command_line() -> None:
    dry = subprocess.run(["make", "-n", "run", "PORT=5077"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         check=True)
    assert "flask --app app serve --port 5077" in dry.stdout


def test_every_start_prints_the_demo_credentials_and_the_cli_lists_the_customers(tmp_path: Path) -> None:
    env = {**clean_environment(), "DATABASE_URL": f"sqlite:///{tmp_path / 'fx.db'}",
           "PORT": str(free_private_port())}
    starts = []
    for n in range(2):
        run = Process(f"serve-{n}", (FLASK, "--app", "app", "serve"), env, tmp_path / f"serve-{n}.log")
        run.start()
        try:
            run.wait_for_output("serving on http://127.0.0.1:" + env["PORT"])
            starts.append(DEMO_LINE.findall(run.output()))
        finally:
            run.kill()
    first, second = starts
    assert len(first) == 3 and second == first  # the same logins and keys, not new customers
    assert (tmp_path / "demo.txt").stat().st_mode & 0o777 == 0o600

    def flask(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FLASK, "--app", "app", *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                              text=True, timeout=60)

    listed = flask("customers", "list").stdout.splitlines()
    assert len(listed) == 3
    for (owner, account, email, key), line in zip(first, listed, strict=True):
        assert owner in line and account in line and email in line and f"fxk_{key.split('_')[1]}_" in line
    made = flask("api-key", "create", "--account", first[0][1])
    assert made.returncode == 0 and made.stdout.startswith("fxk_")
    wrong = flask("api-key", "create", "--customer", first[0][1])  # an account id where a customer id goes
    assert wrong.returncode == 1 and wrong.stderr.strip().count("\n") == 0 and "--account" in wrong.stderr


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("DATABASE_URL", "nonsense", "DATABASE_URL"),
    ("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/none?connect_timeout=2", "the database did not answer"),
    ("STEP_LEASE_SECONDS", "often", "STEP_LEASE_SECONDS"),
])
def test_a_bad_setting_is_one_clear_line_and_a_non_zero_exit(variable: str, value: str, says: str) -> None:
    env = {**clean_environment(), variable: value}
    run = subprocess.run([FLASK, "--app", "app", "customers", "list"], cwd=PROJECT_ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert says in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def test_the_cli_finds_the_bank_that_make_run_recorded_beside_its_database(tmp_path: Path) -> None:
    import bootstrap
    from settings import Settings

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'fx.db'}")
    assert bootstrap.build_bank(settings).base_url == bootstrap.DEFAULT_BANK_URL
    bootstrap.record_bank_url(settings, "http://127.0.0.1:23456")
    assert bootstrap.build_bank(settings).base_url == "http://127.0.0.1:23456"
    assert bootstrap.build_bank(Settings(database_url=settings.database_url, bank_url="http://bank:8100")
                                ).base_url == "http://bank:8100"  # BANK_URL, when set, wins


def test_in_embedded_mode_the_operations_page_switches_a_bank_outage_on_and_off(
    ops_app: Any, ops: Any, wf: Any
) -> None:
    assert 'id="bank-outage"' not in ops.get("/ops/").get_data(as_text=True)  # a real bank: no switch
    assert ops.post("/ops/bank-outage", data={"down": "on"}).status_code in (400, 404)
    ops_app.extensions["fx.embedded_bank"] = True
    page = ops.get("/ops/").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None and "Simulate a bank outage" in page
    assert ops.post("/ops/bank-outage", data={"down": "on", "csrf_token": token.group(1)}).status_code == 302
    assert wf.bank.faults()["down"] is True
    assert "simulating an outage" in ops.get("/ops/").get_data(as_text=True)
    ops.post("/ops/bank-outage", data={"down": "off", "csrf_token": token.group(1)})
    assert wf.bank.faults()["down"] is False
