"""The services the distributed-mode tests use for real: PostgreSQL, Redis and an ``mlflow server``.

PostgreSQL (127.0.0.1:5432, database ``test``, trust auth) and Redis (127.0.0.1:6379) must be running:
a test that needs one fails when it is absent.  Only where ``DHNS_SEARCH_NO_SERVICES=1`` says they are
absent on purpose (a laptop) are those tests skipped, and never under ``CI=true`` (``.ci/run`` does not set
the variable).  :func:`mlflow_server` starts a tracking server on a free loopback port and stops its whole
process group afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"


def _absent(what: str, why: str) -> None:
    if os.environ.get("DHNS_SEARCH_NO_SERVICES") == "1" and os.environ.get("CI") != "true":
        pytest.skip(f"{what} absent (DHNS_SEARCH_NO_SERVICES=1): {why}")
    pytest.fail(f"{what} is needed by this test and is not reachable: {why} "
                "(set DHNS_SEARCH_NO_SERVICES=1 to skip these tests outside CI)")


def require_postgres() -> str:
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3):
            return POSTGRES
    except Exception as err:  # noqa: BLE001 - driver missing or server down
        _absent("PostgreSQL on 127.0.0.1:5432", f"{type(err).__name__}: {err}")
    raise AssertionError("unreachable")


def require_redis() -> str:
    try:
        import redis

        redis.Redis.from_url(REDIS, socket_connect_timeout=3).ping()
        return REDIS
    except Exception as err:  # noqa: BLE001
        _absent("Redis on 127.0.0.1:6379", f"{type(err).__name__}: {err}")
    raise AssertionError("unreachable")


@contextlib.contextmanager
def scratch_postgres_database(prefix: str = "dhns") -> Iterator[str]:
    """A new PostgreSQL database on the test server (e.g. an MLflow server's backend), dropped afterwards;
    yields its SQLAlchemy URL."""
    import uuid

    import psycopg

    base = require_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: URL -> process of each running :func:`mlflow_server` (a test may kill one to see the store fail)
SERVERS: dict[str, subprocess.Popen] = {}


@contextlib.contextmanager
def mlflow_server(folder: Path, backend: str | None = None) -> Iterator[str]:
    """``mlflow server`` on a free loopback port (backend: a SQLite file in ``folder`` unless given, artifacts
    served from ``folder/artifacts``); yields its URL and stops its process group at the end."""
    import requests

    port = free_port()
    backend = backend or f"sqlite:///{folder / 'server.db'}"
    log = (folder / "mlflow-server.log").open("ab")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", backend, "--artifacts-destination", str(folder / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(folder / 'mlflow-server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        SERVERS[url] = proc
        yield url
    finally:
        SERVERS.pop(url, None)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
