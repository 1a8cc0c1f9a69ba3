"""logs.setup: one masked JSON object per line from structlog and stdlib, no locals."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import structlog

from tokend import logs

CANARY = "v^1.1#CANARY-secret-value-0123456789"


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """JSON logging into a buffer; the logging configuration is put back afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    access = logging.getLogger("aiohttp.access")
    saved_access = access.level
    saved_structlog = structlog.get_config()
    stream = io.StringIO()
    logs.setup(json=True, stream=stream)
    try:
        yield stream
    finally:
        structlog.configure(**saved_structlog)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        access.setLevel(saved_access)


def lines(stream: io.StringIO) -> list[dict]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [orjson.loads(line) for line in text.splitlines()]


def assert_timestamp(value: str) -> None:
    assert value.endswith(("Z", "+00:00")), value
    stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert stamp.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=5)


def test_structlog_and_stdlib_write_one_json_object_per_line(output: io.StringIO) -> None:
    structlog.get_logger("tokend.test").info("cycle_summary", accounts_checked=3)
    logging.getLogger("tokend.test.stdlib").warning("stdlib says %s", "hello")
    first, second = lines(output)
    assert first["event"] == "cycle_summary"
    assert first["level"] == "info"
    assert first["accounts_checked"] == 3
    assert second["event"] == "stdlib says hello"
    assert second["level"] == "warning"
    for line in (first, second):
        assert_timestamp(line["timestamp"])


def test_secret_fields_never_reach_the_output(output: io.StringIO) -> None:
    log = structlog.get_logger("tokend.test")
    log.info("token_refreshed", refresh_token=CANARY, client_secret=CANARY + "cs",
             access_token=CANARY + "at", code=CANARY + "code")
    log.info("http_exchange", request={"headers": {"Authorization": "Bearer " + CANARY},
                                        "body": {"refresh_token": CANARY}},
             response=[{"access_token": CANARY}])
    with structlog.contextvars.bound_contextvars(client_secret=CANARY, account_id="acct-7"):
        log.info("bound_context")
    text = output.getvalue()
    assert "CANARY" not in text
    records = lines(output)
    assert len(records) == 3
    assert records[0]["refresh_token"].startswith("v^1.")
    assert records[1]["request"]["headers"]["Authorization"] == "Bearer ****"
    assert records[2]["account_id"] == "acct-7"


def raise_with_a_secret_local() -> None:
    refresh_token = CANARY  # a local a traceback renderer with locals would print
    raise RuntimeError("provider call failed " + str(len(refresh_token)))


def test_structlog_exception_has_no_locals(output: io.StringIO) -> None:
    try:
        raise_with_a_secret_local()
    except RuntimeError:
        structlog.get_logger("tokend.test").exception("refresh_crashed")
    assert "CANARY" not in output.getvalue()
    (record,) = lines(output)
    assert record["event"] == "refresh_crashed"
    assert record["level"] == "error"
    assert "RuntimeError" in orjson.dumps(record["exception"]).decode()
    assert "raise_with_a_secret_local" in orjson.dumps(record["exception"]).decode()


def test_stdlib_exception_has_no_locals(output: io.StringIO) -> None:
    try:
        raise_with_a_secret_local()
    except RuntimeError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    assert "CANARY" not in output.getvalue()
    (record,) = lines(output)
    assert "RuntimeError" in orjson.dumps(record).decode()


def test_console_exception_has_no_locals(output: io.StringIO) -> None:
    console = io.StringIO()
    logs.setup(json=False, stream=console)
    try:
        raise_with_a_secret_local()
    except RuntimeError:
        structlog.get_logger("tokend.test").exception("refresh_crashed", refresh_token=CANARY)
    text = console.getvalue()
    assert "refresh_crashed" in text
    assert "RuntimeError" in text
    # The value: a rich traceback shows each frame's source lines, which name `CANARY`.
    assert CANARY not in text


def test_a_stream_that_is_not_a_tty_gets_json(output: io.StringIO) -> None:
    stream = io.StringIO()
    logs.setup(stream=stream)
    structlog.get_logger("tokend.test").info("worker_heartbeat")
    assert orjson.loads(stream.getvalue())["event"] == "worker_heartbeat"


def test_level_filters(output: io.StringIO) -> None:
    stream = io.StringIO()
    logs.setup(level="warning", json=True, stream=stream)
    structlog.get_logger("tokend.test").info("quiet")
    logging.getLogger("tokend.test").info("quiet too")
    structlog.get_logger("tokend.test").error("loud")
    assert [r["event"] for r in lines(stream)] == ["loud"]


def test_fields_that_orjson_does_not_take_directly(output: io.StringIO) -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    structlog.get_logger("tokend.test").info(
        "cycle_summary", statuses={200: 3, 429: 1}, at=when, obj=object())
    (record,) = lines(output)
    assert record["statuses"] == {"200": 3, "429": 1}
    assert record["at"].startswith("2024-01-02T03:04:05")
    assert "object" in record["obj"]


def test_aiohttp_access_log_is_quiet(output: io.StringIO) -> None:
    logging.getLogger("aiohttp.access").info("GET /health 200")
    assert output.getvalue() == ""
