"""A short, flat environment summary for the run page: the lines a reviewer checks first."""

from __future__ import annotations

from typing import Any

from evalkeeper.server.schemas import EnvItem

_MAX_VALUE = 200
_MAX_ITEMS = 40


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return f"{len(value)} entries"
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value[:5]) + (f" … (+{len(value) - 5})" if len(value) > 5 else "")
    text = str(value)
    return text if len(text) <= _MAX_VALUE else text[:_MAX_VALUE] + "…"


def environment_summary(env: dict[str, Any] | None) -> list[EnvItem]:
    """Captured environments (bundle.env): its summary plus score-relevant packages; others: flattened."""
    if not env:
        return []
    items: list[EnvItem] = []
    if "python" in env and isinstance(env.get("python"), dict):
        from evalkeeper.bundle.env import SCORE_RELEVANT_PACKAGES, summarize_environment

        for key, value in summarize_environment(env).items():
            if value not in (None, ""):
                items.append(EnvItem(key=key, value=_text(value)))
        packages = env.get("packages")
        if isinstance(packages, dict):
            for name in SCORE_RELEVANT_PACKAGES:
                if name in packages:
                    items.append(EnvItem(key=f"pkg {name}", value=_text(packages[name])))
        return items[:_MAX_ITEMS]
    for key, value in env.items():
        if isinstance(value, dict) and len(value) <= 8:
            items.extend(EnvItem(key=f"{key}.{k}", value=_text(v)) for k, v in value.items())
        else:
            items.append(EnvItem(key=str(key), value=_text(value)))
    return items[:_MAX_ITEMS]
