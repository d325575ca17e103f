"""Crash-safe Parquet results: one file per finished point, written atomically.

Layout of a sweep directory::

    spec.json                  the sweep's canonical spec and hash (a directory holds one sweep)
    points/<hash>.parquet      one row per finished point (config, summary metrics, wall time)
    requests/<hash>.parquet    one row per request, when the spec asks for it
    runs.parquet               all rows together, rewritten after each sweep run

Every file is written to a temporary name and renamed, so a SIGKILL leaves either the whole file
or none; leftover temporary files are removed on the next open. A point counts as done iff its
file in points/ exists, so a rerun skips exactly the finished points.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ConfigError
from .spec import SweepSpec


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_table(path: Path, columns_or_rows) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = (pa.Table.from_pylist(columns_or_rows) if isinstance(columns_or_rows, list)
             else pa.table(columns_or_rows))
    _atomic_write(path, lambda tmp: pq.write_table(table, tmp))


class ResultStore:
    """The results of one sweep in one directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.points_dir = self.root / "points"
        self.requests_dir = self.root / "requests"
        self.created: list[Path] = []       # what `open` made, outermost first

    @classmethod
    def open(cls, root: str | Path, spec: SweepSpec) -> ResultStore:
        """Open (or create) the store of `spec`; refuse a directory that holds another sweep.

        What this call creates (folders, spec.json) is remembered, so that `discard_if_unused`
        can take it back when the sweep fails before its first point is stored: a corrected
        spec can then be run into the same folder.
        """
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise ConfigError(f"--out {root}: is a file; expected a folder for the sweep's results")
        spec_file = root / "spec.json"
        if spec_file.exists():
            _check_same_sweep(root, spec_file, spec)
        elif root.exists() and any(root.iterdir()):
            raise ConfigError(f"--out {root}: exists, is not empty and holds no kvsched sweep")
        store = cls(root)
        missing = [p for p in (*reversed(root.parents), root, store.points_dir, store.requests_dir)
                   if not p.exists()]
        try:
            for folder in missing:
                folder.mkdir()
            for stale in list(store.points_dir.glob(".*.tmp-*")) + list(store.requests_dir.glob(".*.tmp-*")):
                stale.unlink()
            if not spec_file.exists():
                text = json.dumps({"name": spec.name, "hash": spec.hash, "spec": spec.as_dict()}, indent=2)
                _atomic_write(spec_file, lambda tmp: tmp.write_text(text))
                missing.append(spec_file)
        except OSError as exc:
            store.created = missing
            store.discard_if_unused()
            raise ConfigError(f"--out {root}: cannot write: {exc.strerror or exc}") from None
        store.created = missing
        return store

    def discard_if_unused(self) -> None:
        """Remove what `open` created if no point has been stored since (a failed first run)."""
        if self.points_dir.is_dir() and any(self.points_dir.glob("*.parquet")):
            return
        for path in reversed(self.created):
            try:
                path.unlink() if path.is_file() else path.rmdir()
            except OSError:       # not empty (someone else's file) or already gone: leave it
                pass
        self.created = []

    def has(self, config_hash: str) -> bool:
        return (self.points_dir / f"{config_hash}.parquet").exists()

    def write(self, row: dict, requests: dict | None) -> None:
        """Store one finished point (requests first, so a point file implies its requests)."""
        if requests is not None:
            _write_table(self.requests_dir / f"{row['config_hash']}.parquet", requests)
        _write_table(self.points_dir / f"{row['config_hash']}.parquet", [row])

    def consolidate(self) -> None:
        """Rewrite runs.parquet from the point files."""
        import pyarrow.parquet as pq
        table = load_runs(self.root)
        _atomic_write(self.root / "runs.parquet", lambda tmp: pq.write_table(table, tmp))


def _check_same_sweep(root: Path, spec_file: Path, spec: SweepSpec) -> None:
    try:
        stored = json.loads(spec_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError):
        raise ConfigError(f"--out {root}: spec.json is not valid JSON; not a kvsched sweep") from None
    if not isinstance(stored, dict):
        raise ConfigError(f"--out {root}: spec.json holds no sweep spec; not a kvsched sweep")
    if stored.get("hash") != spec.hash:
        raise ConfigError(f"--out {root}: holds a different sweep ({stored.get('name')!r}, "
                          f"hash {stored.get('hash')}); expected {spec.hash} — use another --out")


def _read(path: Path):
    """One point file; a corrupt one is the user's folder, named in a one-line error."""
    import pyarrow.parquet as pq
    try:
        return pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a corrupt file
        raise ConfigError(f"{path}: not a readable Parquet point file ({type(exc).__name__}); "
                          "delete it and rerun the sweep to recompute that point") from None


def _concat(paths: list[Path]):
    import pyarrow as pa
    tables = [_read(p) for p in sorted(paths)]
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="permissive")


def load_runs(root: str | Path):
    """All finished points of a sweep directory as a pyarrow Table (one row per point)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such folder; expected a sweep's result folder (kvsched sweep --out)")
    if not (root / "spec.json").is_file():
        raise ConfigError(f"{root}: not a kvsched sweep directory (no spec.json)")
    return _concat(list((root / "points").glob("*.parquet")))


def load_spec_record(root: str | Path) -> dict:
    """The stored spec.json of a sweep folder (name, hash, spec); ConfigError when corrupt."""
    path = Path(root) / "spec.json"
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{Path(root)}: not a kvsched sweep directory (no spec.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError):
        raise ConfigError(f"{path}: not valid JSON; not a kvsched sweep") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("hash"), str):
        raise ConfigError(f"{path}: holds no kvsched sweep spec (expected name, hash and spec)")
    return stored


def load_requests(root: str | Path):
    """Per-request rows of a sweep directory (empty when the spec did not ask for them)."""
    return _concat(list((Path(root) / "requests").glob("*.parquet")))
