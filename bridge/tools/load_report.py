"""What ``bridge loadtest`` reports from its measures: quantiles, figures per call-second, and the stderr
line of a run whose harness was the limit."""

from __future__ import annotations

from typing import Any


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (the nearest rank below); NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def per_call_second(value: float, call_seconds: float, scale: float = 1.0) -> float:
    return round(value * scale / call_seconds, 3)


def limits(result: dict[str, Any]) -> str:
    """The stderr line of a run whose harness was the limit (``limited_by``): what, and what to change."""
    parts = {
        "generator": f"the callers (generator_cpu_share {result['generator_cpu_share']}: add --generators)",
        "standin": f"the Gladia stand-in (standin_cpu_share {result['standin_cpu_share']}: one process, fewer --calls)",
        "harness": f"the harness's cores (harness_cpu_share {result['harness_cpu_share']}: fewer --calls or "
        "more cores)",
    }
    which = ", ".join(parts[name] for name in result["limited_by"])
    return f"limited by {which}: these figures describe the load harness, not the bridge"
