"""GoEmotions-format data: ``text<TAB>label indices (comma separated)<TAB>id`` rows and a labels.txt
(one label per line, line number = index). Users produce the same format from their own data."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path


def default_data_dir() -> Path:
    """``../shared/data/goemotions`` of the repository, or $STREAMOTION_GOEMOTIONS."""
    env = os.environ.get("STREAMOTION_GOEMOTIONS")
    if env:
        return Path(env)
    shared = os.environ.get("STREAMOTION_SHARED")
    if shared:
        return Path(shared) / "data" / "goemotions"
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "data" / "goemotions"
        if cand.is_dir():
            return cand
    return Path.cwd().parent / "shared" / "data" / "goemotions"


@dataclass
class Example:
    text: str
    labels: list[int]


class DataError(ValueError):
    pass


def read_labels(path: str | Path) -> list[str]:
    labels = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if not labels:
        raise DataError(f"{path}: no labels")
    return labels


def read_tsv(path: str | Path, n_labels: int, limit: int = 0) -> list[Example]:
    """Rows of a GoEmotions TSV; a bad row is an error naming its line."""
    out: list[Example] = []
    with open(path, newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) < 2:
                raise DataError(
                    f"{path}:{lineno}: expected text<TAB>labels[<TAB>id], got {len(row)} column(s)"
                )
            try:
                labels = sorted({int(x) for x in row[1].split(",") if x.strip()})
            except ValueError:
                raise DataError(
                    f"{path}:{lineno}: labels must be comma-separated integers, got {row[1]!r}"
                ) from None
            bad = [x for x in labels if not 0 <= x < n_labels]
            if not labels or bad:
                raise DataError(f"{path}:{lineno}: label indices {bad or '(none)'} outside 0..{n_labels - 1}")
            out.append(Example(row[0], labels))
            if limit and len(out) >= limit:
                break
    if not out:
        raise DataError(f"{path}: no rows")
    return out


def labels_for(data_file: str | Path, labels_file: str | Path | None = None) -> list[str]:
    p = Path(labels_file) if labels_file else Path(data_file).parent / "labels.txt"
    if not p.is_file():
        raise DataError(f"{p} not found (labels.txt beside the TSV, or --labels)")
    return read_labels(p)
