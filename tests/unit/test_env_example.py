"""`.env.example` documents every setting: a new field without a line there fails this test."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from common.config import WELL_KNOWN_ENV, Settings

ROOT = Path(__file__).resolve().parents[2]


def _documented() -> set[str]:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    return {m.group(1).upper() for m in re.finditer(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.MULTILINE)}


def _expected() -> set[str]:
    names: set[str] = set()
    for field, info in Settings.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for sub in annotation.model_fields:
                names.add(f"{field}__{sub}".upper())
        else:
            names.add(field.upper())
    return names


def test_every_setting_is_documented() -> None:
    documented = _documented()
    conventional = {f"{s}__{f}".upper() for s, f in WELL_KNOWN_ENV.values()}
    missing = {n for n in _expected() - documented if not (n in conventional and _alias(n) & documented)}
    assert not missing, f"add to .env.example: {sorted(missing)}"


def _alias(nested: str) -> set[str]:
    return {name for name, target in WELL_KNOWN_ENV.items() if f"{target[0]}__{target[1]}".upper() == nested}
