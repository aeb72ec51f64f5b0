"""Printing reports as JSON."""

from __future__ import annotations

import json
import math
from typing import Any


def json_safe(obj: Any) -> Any:
    """NaN and infinity are not JSON: report them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def print_json(obj: Any) -> None:
    """``obj`` as indented JSON on stdout, NaN and infinity as null."""
    print(json.dumps(json_safe(obj), indent=2))
