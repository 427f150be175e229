"""Logging setup for the CLI: one format, to stderr, quiet third-party chatter."""

from __future__ import annotations

import logging
import re
import sys
import warnings

_NOISY = ("great_expectations", "feast", "urllib3", "asyncio", "numexpr", "matplotlib")


def redact(text: str) -> str:
    """`text` with the value of every `password=` (and a URL's user:password@) replaced by ***."""
    text = re.sub(r"(password=)[^,\s]*", r"\1***", str(text), flags=re.IGNORECASE)
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)


class _RedactingFormatter(logging.Formatter):
    """Secrets never reach a log line, whoever logged them (Feast and redis-py log connection strings too)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: str = "INFO") -> None:
    """Configure the root logger once per process (idempotent)."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if not any(getattr(h, "_feedstore", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
        handler._feedstore = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for name in _NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # Known third-party noise: deprecations inside ibis / GX, and Feast's advisory that
    # serve_features_while_materializing only matters with a SQL registry (set on purpose, see feature_store.yaml).
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(ibis|great_expectations)(\.|$)")
    warnings.filterwarnings("ignore", message=r"module 'sre_(constants|parse)' is deprecated")
    logging.getLogger("feast.repo_config").setLevel(logging.ERROR)
    # libraries reset the warning filters on import (GX's sre_* deprecations still came through): drop captured
    # DeprecationWarnings at the logger too; they are not actionable for a user of the CLI
    warnings_log = logging.getLogger("py.warnings")
    if not any(isinstance(f, _DropDeprecations) for f in warnings_log.filters):
        warnings_log.addFilter(_DropDeprecations())


class _DropDeprecations(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "DeprecationWarning" not in record.getMessage()
