"""structlog configuration: JSON lines on stdout (console on a tty), stdlib loggers bridged.

Every line passes the masking processor, and tracebacks are rendered without locals.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import orjson
import structlog

from tokend import masking


def _dumps(obj: object, default: object = None) -> str:
    # Non-string keys ({200: 3}) are a field's business, not a reason to lose the line.
    return orjson.dumps(obj, default=default, option=orjson.OPT_NON_STR_KEYS).decode()


def setup(*, level: str = "info", stream: TextIO | None = None, json: bool | None = None) -> None:
    stream = stream or sys.stdout
    if json is None:
        json = not stream.isatty()
    shared: list = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        masking.structlog_processor,
    ]
    if json:
        tail: list = [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
    else:
        tail = [structlog.dev.ConsoleRenderer(
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False)
            if _has_rich() else structlog.dev.plain_traceback
        )]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log repeats what our own events say, one line per probe.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _has_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True
