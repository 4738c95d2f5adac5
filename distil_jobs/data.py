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
from distil_jobs.artifacts.verify import check_shape, entries, read_verified
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


# Everything a parser may raise on a malformed file: Arrow's whole family (ArrowTypeError is a
# TypeError, not a ValueError), json's JSONDecodeError and UnicodeDecodeError (both ValueErrors).
_PARSE_ERRORS = (pa.ArrowException, ValueError, TypeError)
_TEXT_FORMATS = (".jsonl", ".json", ".csv", ".tsv", ".txt")
_EXPECTED = {".jsonl": "one JSON object per line", ".json": "one JSON object per line, or one array of objects",
             ".csv": "comma-separated with a header row", ".tsv": "tab-separated with a header row",
             ".parquet": "a whole Parquet file", ".txt": "UTF-8 text, one text per line"}


def _read_one(loc: Location, rel: str, entry: dict[str, Any] | None = None) -> pa.Table:
    """One file; with its manifest `entry`, its size and sha256 are checked before it is parsed."""
    name = rel or posixpath.basename(loc.root)
    where = f"{loc.uri}/{rel}" if rel else loc.uri
    raw = read_verified(loc, rel, entry)
    if name.endswith(_TEXT_FORMATS):
        # Arrow's JSON reader takes invalid UTF-8 as it comes and fails later, far from the file.
        _check_utf8(raw, where)
    try:
        if name.endswith(".parquet"):
            return pq.read_table(io.BytesIO(raw))
        if name.endswith(".tsv"):
            # Corpus TSVs are unquoted; a stray '"' inside a sentence must not start a quoted field.
            return pacsv.read_csv(io.BytesIO(raw), parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
                                  convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
        if name.endswith(".csv"):
            return pacsv.read_csv(io.BytesIO(raw))
        if name.endswith(".txt"):  # one text per line (column 'text'); blank lines are no text
            lines = (line.rstrip("\r") for line in raw.decode("utf-8").split("\n"))  # not splitlines: U+2028 is text
            return pa.table({"text": pa.array([line for line in lines if line.strip()], pa.string())})
        if name.endswith((".jsonl", ".json")):
            stripped = raw.lstrip()
            if stripped.startswith(b"["):
                return _json_array(raw, where)
            return pajson.read_json(io.BytesIO(raw))
    except _PARSE_ERRORS as e:
        expected = _EXPECTED.get(posixpath.splitext(name)[1], "a valid file")
        raise DistilError(f"cannot parse {where} ({first_line(e)}): fix the file ({expected})") from None
    raise DistilError(f"{loc.uri}: unknown file type; use one of {', '.join(DATA_EXTENSIONS)}, or .txt (one text per line)")


def _check_utf8(raw: bytes, where: str) -> None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DistilError(f"{where} is not UTF-8 (byte 0x{raw[e.start]:02x} on line {line}): re-encode it as UTF-8, "
                          "e.g. iconv -f latin1 -t utf-8") from None


def _json_array(raw: bytes, where: str) -> pa.Table:
    """A .json file holding one array of row objects."""
    import json

    rows = json.loads(raw)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DistilError(f"cannot parse {where}: a JSON array must hold one object per row, e.g. "
                          '[{"text": "..."}]')
    try:
        return pa.Table.from_pylist(rows)
    except _PARSE_ERRORS:
        # Arrow says "Expected bytes, got a 'int' object": name the column and the row instead.
        column, row, kinds = _mixed_column(rows)
        raise DistilError(f"cannot parse {where}: column '{column}' mixes {' and '.join(kinds)} (first change at "
                          f"row {row}): give every value of a column the same type") from None


_JSON_KINDS = {str: "text", int: "number", float: "number", bool: "boolean", list: "list", dict: "object"}


def _mixed_column(rows: list[dict[str, Any]]) -> tuple[str, int, list[str]]:
    """The first column whose non-null values change Python type, the row where it does, and the types."""
    first: dict[str, str] = {}
    for i, row in enumerate(rows):
        for key, value in row.items():
            if value is None:
                continue
            kind = _JSON_KINDS.get(type(value), type(value).__name__)
            if first.setdefault(key, kind) != kind:
                return key, i, [first[key], kind]
    return "?", 0, ["incompatible values"]


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
        promised = entries(manifest)
        files = [f["path"] if isinstance(f, dict) else f for f in manifest.get("files", [])]
        files = sorted(f for f in files if f.startswith("data/") and f.endswith(".parquet"))
        if not files:
            raise DistilError(f"artifact {uri} holds no data chunks (a {manifest.get('kind')}): pass a dataset")
        table = pa.concat_tables([_read_one(loc, f, promised.get(f)) for f in files], promote_options="default")
        check_shape(uri, manifest, table.num_rows, table.schema)  # the manifest's rows and dims are the data's
        return table
    from distil_jobs.artifacts.manifest import list_files

    files = [f for f in list_files(loc) if f.endswith(DATA_EXTENSIONS) and not f.startswith(PRIVATE_PREFIXES)]
    if not files:
        raise DistilError(f"input folder {uri} holds no data files ({', '.join(DATA_EXTENSIONS)})")
    return pa.concat_tables([_read_one(loc, f) for f in sorted(files)], promote_options="default")


def _dataset_dict_error(uri: str, ds: Any) -> pa.Table:
    raise DistilError(f"{uri} holds several splits ({', '.join(ds)}): point --input at one split folder, e.g. {uri}/train")


def text_column(table: pa.Table, column: str, uri: str, flag: str = "--text-column", cast: bool = False
                ) -> list[str | None]:
    """A column of texts. Strings pass; bytes are decoded as UTF-8 (a file with one stray byte is read as
    binary by Arrow) or refused naming the row; numbers, booleans, lists and dicts are refused unless
    `cast` (--cast-text), because `str()` of them is almost never the text anyone meant to embed."""
    if column not in table.column_names:
        raise DistilError(f"column '{column}' not in {uri} (columns: {', '.join(table.column_names)}): pass {flag}")
    col = table.column(column)
    kind = col.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind) \
            or (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(kind)):
        return col.to_pylist()
    values = col.to_pylist()
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return [_decode(v, i, column, uri) for i, v in enumerate(values)]
    if not cast:
        first = next((i for i, v in enumerate(values) if v is not None), 0)
        raise DistilError(f"column '{column}' of {uri} holds {kind}, not text (row {first}: {str(values[first])[:40]!r}): "
                          f"pass the text column with {flag}, or --cast-text to embed each value's string form")
    import json

    return [None if v is None else v if isinstance(v, str) else
            json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, (list, dict)) else str(v) for v in values]


def _decode(value: bytes | None, row: int, column: str, uri: str) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DistilError(f"row {row} of column '{column}' in {uri} is not UTF-8 (byte 0x{value[e.start]:02x} at "
                          f"position {e.start}): re-encode the file as UTF-8") from None


def empty_rows(texts: list[Any]) -> list[int]:
    return [i for i, t in enumerate(texts) if t is None or not str(t).strip()]


def dev_split(rows: int, fraction: float, seed: int) -> tuple[Any, Any]:
    """(training, dev) row indices, each sorted: `fraction` of the rows held out, the same ones on every
    rank and every rerun with this seed."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(rows)
    n_dev = max(1, round(rows * fraction))
    if n_dev >= rows:
        raise DistilError(f"--dev-fraction {fraction} leaves no training rows out of {rows}")
    return np.sort(order[n_dev:]), np.sort(order[:n_dev])
