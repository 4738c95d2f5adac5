"""Logging: one line per phase on stderr, and metrics as JSON lines a machine can read."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_configured = False


def get_logger(name: str) -> logging.Logger:
    global _configured
    if not _configured:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        root = logging.getLogger("distil_jobs")
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
        _configured = True
    return logging.getLogger(f"distil_jobs.{name}")


def log_metrics(logger: logging.Logger, event: str, **values: Any) -> None:
    """A structured line, `metrics {"event": ..., ...}`, greppable from any scheduler's log."""
    logger.info("metrics %s", json.dumps({"event": event, **values}, default=str, sort_keys=True))
