"""Reading text datasets from any URI into an Arrow table.

Formats: jsonl/json, csv, tsv, parquet files; folders of those; `datasets.save_to_disk`
folders; artifacts of other jobs (their `data/*.parquet`); and `hf://datasets/org/name`.
"""

from __future__ import annotations

import io
import os
import posixpath
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from distil_jobs.artifacts import Location, open_location
from distil_jobs.artifacts.manifest import MANIFEST, PRIVATE_PREFIXES
from distil_jobs.errors import DistilError, first_line

DATA_EXTENSIONS = (".jsonl", ".json", ".csv", ".tsv", ".parquet")

# Licences of the datasets in $DISTIL_DATA_DIR (see its README), recorded in manifests so a
# model trained on non-commercial data says so.
DATASET_LICENSES = {
    "menyo20k": "CC BY-NC 4.0",
    "stsb": "CC BY-SA 4.0 (scores); texts keep their STS-B source licences",
    "banking77": "CC BY 4.0",
    "emotion": "research/educational use only (CARER)",
    "amazon_counterfactual_en": "CC BY-SA 4.0",
    "afrisenti_yor": "CC BY 4.0",
    "squad_v1.1_dev": "CC BY-SA 4.0",
    "wikitext2_raw_test": "CC BY-SA 3.0",
    "corpus": "non-commercial (union of its sources, see DISTIL_DATA_DIR/README.md)",
}


def data_dir() -> str:
    """The shared data folder: $DISTIL_DATA_DIR, else ../shared/data next to the checkout."""
    env = os.environ.get("DISTIL_DATA_DIR")
    if env:
        return env
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.normpath(os.path.join(here, "..", "shared", "data"))


def license_of(uri: str) -> str | None:
    parts = uri.replace("\\", "/").split("/")
    for name, lic in DATASET_LICENSES.items():
        if name in parts:
            return lic
    return None


def _read_one(loc: Location, rel: str) -> pa.Table:
    name = rel or posixpath.basename(loc.root)
    with loc.fs.open(loc.path(rel), "rb") as f:
        raw = f.read()
    try:
        if name.endswith(".parquet"):
            return pq.read_table(io.BytesIO(raw))
        if name.endswith(".tsv"):
            # Corpus TSVs are unquoted; a stray '"' inside a sentence must not start a quoted field.
            return pacsv.read_csv(io.BytesIO(raw), parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
                                  convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
        if name.endswith(".csv"):
            return pacsv.read_csv(io.BytesIO(raw))
        if name.endswith((".jsonl", ".json")):
            stripped = raw.lstrip()
            if stripped.startswith(b"["):
                import json

                return pa.Table.from_pylist(json.loads(raw))
            return pajson.read_json(io.BytesIO(raw))
    except (pa.ArrowInvalid, ValueError) as e:
        raise DistilError(f"cannot parse {loc.uri}/{rel}".rstrip("/") + f": {first_line(e)}") from None
    raise DistilError(f"{loc.uri}: unknown file type; use one of {', '.join(DATA_EXTENSIONS)}")


def _is_dir(loc: Location) -> bool:
    try:
        return bool(loc.fs.isdir(loc.root))
    except (OSError, ValueError):
        return False


def read_table(uri: str, allow_partial: bool = False) -> pa.Table:
    """Read a dataset URI into one Arrow table, rows in source order."""
    loc = open_location(uri)
    if not loc.exists():
        raise DistilError(f"input {uri} not found: check the path (DISTIL_DATA_DIR={data_dir()})")
    if not _is_dir(loc):
        return _read_one(loc, "")
    names = loc.listdir()
    if "state.json" in names and "dataset_info.json" in names and loc.is_local:
        import datasets

        ds = datasets.load_from_disk(loc.root)
        return ds.data.table if hasattr(ds, "data") else _dataset_dict_error(uri, ds)
    if MANIFEST in names or "progress.json" in names:
        from distil_jobs.artifacts import require_artifact

        _, manifest = require_artifact(uri, allow_partial=allow_partial)
        files = [f["path"] if isinstance(f, dict) else f for f in manifest.get("files", [])]
        files = [f for f in files if f.startswith("data/") and f.endswith(".parquet")]
    else:
        from distil_jobs.artifacts.manifest import list_files

        files = [f for f in list_files(loc) if f.endswith(DATA_EXTENSIONS) and not f.startswith(PRIVATE_PREFIXES)]
    if not files:
        raise DistilError(f"input folder {uri} holds no data files ({', '.join(DATA_EXTENSIONS)})")
    return pa.concat_tables([_read_one(loc, f) for f in sorted(files)], promote_options="default")


def _dataset_dict_error(uri: str, ds: Any) -> pa.Table:
    raise DistilError(f"{uri} holds several splits ({', '.join(ds)}): point --input at one split folder, e.g. {uri}/train")


def text_column(table: pa.Table, column: str, uri: str, flag: str = "--text-column") -> list[Any]:
    if column not in table.column_names:
        raise DistilError(f"column '{column}' not in {uri} (columns: {', '.join(table.column_names)}): pass {flag}")
    return table.column(column).to_pylist()


def empty_rows(texts: list[Any]) -> list[int]:
    return [i for i, t in enumerate(texts) if t is None or not str(t).strip()]
