"""MTEB evaluation: local tasks from data folders, model loading, and the comparison report.

`import_mteb()` is the one way into mteb here: it points mteb's cache at the distil-jobs cache
before mteb is imported, because mteb reads MTEB_CACHE at import time and would otherwise
write under ~/.cache.
"""

from __future__ import annotations

import os
from types import ModuleType

from distil_jobs.models.registry import cache_dir


def import_mteb() -> ModuleType:
    os.environ.setdefault("MTEB_CACHE", str(cache_dir() / "mteb"))
    import mteb

    return mteb
