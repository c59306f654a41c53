"""User-supplied interpretations: a ``{"layer:feature": description}`` dict or Neuronpedia JSON.

Accepted forms (``context["user_interpretations"]``, alias ``context["feature_interpretations"]``,
or a path to a ``.json`` file holding any of them):

* ``{"12:345": "refusal: fires before 'I cannot'"}`` (the seed README's
  ``feature_interpretations=`` form); a value may also be a mapping with ``description``,
  ``tags``, ``promoted_tokens``, ``suppressed_tokens``, ``confidence``;
* ``{"12:345": FeatureInterpretation(...)}`` or lists of them;
* Neuronpedia-style exports: a list (or ``{"features"/"explanations": [...]}``) of records
  with ``layer`` (int, or a Neuronpedia layer id such as ``"12-res-jb"``), ``index`` /
  ``feature`` / ``featureId``, and ``description``, ``explanation`` or
  ``explanations: [{"description": ...}]``; ``pos_str`` / ``neg_str`` become promoted /
  suppressed tokens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from md_framework.types import FeatureInterpretation, FeatureRef

from builtin_plugins.interpreters.tags import text_tags, token_tags

SOURCE = "user"


def _layer(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    match = re.match(r"\s*(\d+)", str(value))
    return int(match.group(1)) if match else None


def _key_ref(key: str) -> FeatureRef | None:
    # "12:345", "12/345", and the design document's "L12_F345"
    match = re.fullmatch(r"\s*[Ll]?(\d+)\s*[:/_-]\s*[Ff]?(\d+)\s*", str(key))
    return FeatureRef(layer=int(match.group(1)), feature=int(match.group(2))) if match else None


def _from_record(ref: FeatureRef, value: Any, source: str) -> FeatureInterpretation | None:
    if isinstance(value, FeatureInterpretation):
        return value
    if isinstance(value, str):
        return FeatureInterpretation(feature=ref, description=value, tags=text_tags(value), source=source)
    if not isinstance(value, Mapping):
        return None
    desc = value.get("description") or value.get("explanation") or ""
    if not desc and isinstance(value.get("explanations"), list) and value["explanations"]:
        first = value["explanations"][0]
        desc = first.get("description", "") if isinstance(first, Mapping) else str(first)
    promoted = [str(t) for t in value.get("promoted_tokens") or value.get("pos_str") or []]
    suppressed = [str(t) for t in value.get("suppressed_tokens") or value.get("neg_str") or []]
    tags = list(value.get("tags") or []) + text_tags(str(desc)) + token_tags(promoted)
    conf = value.get("confidence")
    return FeatureInterpretation(
        feature=ref, description=str(desc), promoted_tokens=promoted[:20],
        suppressed_tokens=suppressed[:20], tags=sorted(set(tags), key=tags.index), source=source,
        confidence=float(conf) if isinstance(conf, (int, float)) and 0 <= conf <= 1 else None,
    )


def parse_user_interpretations(data: Any, source: str = SOURCE) -> list[FeatureInterpretation]:
    """Normalise any accepted form (see the module docstring) to interpretations."""
    if data is None:
        return []
    if isinstance(data, (str, Path)) and str(data).endswith(".json") or isinstance(data, Path):
        data = json.loads(Path(data).read_text(encoding="utf-8"))
    if isinstance(data, Mapping) and any(k in data for k in ("features", "explanations")) \
            and not any(_key_ref(k) for k in data):
        data = data.get("features") or data.get("explanations")
    out: list[FeatureInterpretation] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            ref = _key_ref(key)
            if ref is None:
                continue
            values = value if isinstance(value, list) else [value]
            out += [i for v in values if (i := _from_record(ref, v, source)) is not None]
    elif isinstance(data, Sequence) and not isinstance(data, str):
        for record in data:
            if isinstance(record, FeatureInterpretation):
                out.append(record)
                continue
            if not isinstance(record, Mapping):
                continue
            layer = _layer(record.get("layer"))
            index = record.get("index", record.get("feature", record.get("featureId")))
            if layer is None or index is None or not str(index).strip().isdigit():
                continue
            ref = FeatureRef(layer=layer, feature=int(index))
            if (interp := _from_record(ref, record, f"{source}:neuronpedia")) is not None:
                out.append(interp)
    return out


def interpret(features: Sequence[FeatureRef], context: Mapping[str, Any]) -> list[FeatureInterpretation]:
    data = context.get("user_interpretations", context.get("feature_interpretations"))
    parsed = parse_user_interpretations(data)
    wanted = {f.key for f in features}
    return [i for i in parsed if not wanted or i.feature.key in wanted]


def by_key(interps: Iterable[FeatureInterpretation]) -> dict[str, list[FeatureInterpretation]]:
    out: dict[str, list[FeatureInterpretation]] = {}
    for interp in interps:
        out.setdefault(interp.feature.key, []).append(interp)
    return out
