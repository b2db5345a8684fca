"""Health of a twin this node only replicates: the origin's verdict wherever the replica can trust it.

The node that ingests a twin (its origin) sees every reading and writes each field's quality as ``<f>.q``;
a replica sees coalesced values and would judge loss, dropouts and spikes differently. So on a replica a
field's quality is the replicated ``<f>.q`` while the replica's own view of the field is fresh (readings keep
arriving: the origin is alive and its score current to within the step it writes at). When the field went
stale here too (the origin or the link is down), the replica's own verdict stands: an old score must not
pass for a current one. Status follows from the quality by the same thresholds as on the origin
(``failed_below``, ``degraded_below``); only a DEGRADED that the origin gives for a reason without lowering
the quality below ``degraded_below`` is not reproduced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drsdtp.intelligence.spec import HealthConfig

__all__ = ["overlay_origin_quality"]

_OWN_VERDICT = ("STALE", "NO_DATA")
_ORDER = {"HEALTHY": 0, "DEGRADED": 1, "FAILED": 2}


def _status(quality: float, cfg: HealthConfig) -> str:
    if quality < cfg.failed_below:
        return "FAILED"
    return "DEGRADED" if quality < cfg.degraded_below else "HEALTHY"


def overlay_origin_quality(
    doc: dict[str, Any], origin_quality: Callable[[str], float | None], cfg: HealthConfig
) -> dict[str, Any]:
    """Rewrite a twin health document (``TwinHealth.to_dict()``) with the origin's field qualities."""
    fields = doc.get("fields", [])
    for f in fields:
        q = origin_quality(f["field"])
        own_reasons = list(f.get("reasons", []))
        if q is None or any(r in _OWN_VERDICT for r in own_reasons):
            f["judged_by"] = "this node"
            continue
        status = _status(q, cfg)
        agree = status != "HEALTHY" and f.get("status") != "HEALTHY"
        f["judged_by"] = "origin"
        f["quality"], f["status"] = round(q, 4), status
        if not agree:
            f["reasons"] = [] if status == "HEALTHY" else ["ORIGIN"]
            f["details"] = [] if status == "HEALTHY" else [f"quality {q:.2f} from the node that ingests it"]
    if fields:
        doc["status"] = max((f["status"] for f in fields), key=_ORDER.__getitem__)
        doc["quality"] = min(f["quality"] for f in fields)
    doc["replica"] = True
    return doc
