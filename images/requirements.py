"""Print the requirements of distil-jobs (its dependencies plus the given extras), one per line.

The images install these in a layer of their own, before the package, so a code change rebuilds
and ships only the small package layer. Standard library only: runs in a bare base image.
    python3 images/requirements.py pyproject.toml train,slurm,s3 > requirements.txt
"""

from __future__ import annotations

import re
import sys

import tomllib


def requirements(pyproject: str, extras: list[str]) -> list[str]:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"requirements.py: unknown extra(s) {', '.join(unknown)}; known: {', '.join(optional)}")
    own = re.compile(rf"^{re.escape(project['name'])}\b", re.I)  # an extra that names the package itself
    seen: dict[str, None] = {}
    for req in [*project.get("dependencies", []), *(r for e in extras for r in optional[e])]:
        if not own.match(req):
            seen.setdefault(req.strip(), None)
    return list(seen)


if __name__ == "__main__":
    extras = [e.strip() for e in (sys.argv[2] if len(sys.argv) > 2 else "").split(",") if e.strip()]
    print("\n".join(requirements(sys.argv[1], extras)))
