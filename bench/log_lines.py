"""Cost of a log line: Django's old plain format, ours in plain and JSON, with and without masking.

Side by side, per line, for four kinds of line (an access line, a service line, a urllib3 DEBUG line, a
line with a key and a PEM block that must be masked): the bare `%(asctime)s ...` format with no filter
(what settings had before), our plain and JSON formats with the context and redaction filters, and the
redaction alone. Lines go to an in-memory stream, so this measures formatting, not the terminal.

    .venv/bin/python bench/log_lines.py [--lines 20000]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a plain script from the repo root: the project packages are not installed in the venv.
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "convergence.settings")

from convergence.log_config import (  # noqa: E402 - after the path setup above
    ContextFilter,
    JsonFormatter,
    PlainFormatter,
    RedactSecretsFilter,
    redact_secrets,
)
from tenants_app.log_context import log_context  # noqa: E402

KEY = "cvg_live_" + "Ab3dEf6hIj" * 4
PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    + "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" * 20
    + "\n-----END PRIVATE KEY-----\n"
)
LINES: dict[str, tuple[str, str, tuple[object, ...]]] = {
    "access": ("convergence.access", "%s %s %s %.1fms", ("GET", "/api/v1/me/keys?page", 200, 12.3)),
    "service": (
        "tenants_app.services.api_keys",
        "API key %s of tenant %s revoked by %s",
        ("key_0123456789abcdef", "acme_corp", "user:operator"),
    ),
    "urllib3": (
        "urllib3.connectionpool",
        '%s://%s:%s "%s %s %s" %s %s',
        (
            "http",
            "127.0.0.1",
            9050,
            "POST",
            "/bigquery/v2/projects/p/queries?prettyPrint=false",
            "HTTP/1.1",
            200,
            878,
        ),
    ),
    "with secrets": ("tenants_app.tests", "refused %s with %r", (KEY, {"private_key": PEM, "region": "eu"})),
}


def handler_with(formatter: logging.Formatter, *, filters: bool) -> logging.Handler:
    handler = logging.StreamHandler(io.StringIO())
    if filters:
        handler.addFilter(ContextFilter())
        handler.addFilter(RedactSecretsFilter())
    handler.setFormatter(formatter)
    return handler


SETUPS: dict[str, Callable[[], logging.Handler]] = {
    "old plain, no filters": lambda: handler_with(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"), filters=False
    ),
    "plain + context + masking": lambda: handler_with(PlainFormatter(), filters=True),
    "json + context + masking": lambda: handler_with(JsonFormatter(), filters=True),
}


def per_line_us(
    handler: logging.Handler, name: str, message: str, args: tuple[object, ...], lines: int
) -> float:
    started = time.perf_counter()
    for _ in range(lines):
        # A fresh record each time, as in real logging: the filter rewrites the one it gets.
        record = logging.LogRecord(name, logging.INFO, __file__, 1, message, args, None)
        handler.handle(record)
    return (time.perf_counter() - started) / lines * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20_000, help="lines per measurement")
    options = parser.parse_args()
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {options.lines} lines each, µs per line"
    )
    header = f"{'line':<14}" + "".join(f"{label:>28}" for label in SETUPS) + f"{'redact_secrets alone':>24}"
    print(header)
    with log_context(request_id="0123456789abcdef0123456789abcdef", tenant_id="acme_corp", actor="user:op"):
        for kind, (name, message, args) in LINES.items():
            row = f"{kind:<14}"
            for make in SETUPS.values():
                row += f"{per_line_us(make(), name, message, args, options.lines):>28.1f}"
            text = message % args
            started = time.perf_counter()
            for _ in range(options.lines):
                redact_secrets(text)
            row += f"{(time.perf_counter() - started) / options.lines * 1e6:>24.1f}"
            print(row)


if __name__ == "__main__":
    main()
