"""`pointsman train router [--from-clickhouse]`: write the routing model file the router watches.

Without --from-clickhouse: the shipped labels only (the same model as the shipped one, written to
the watched file). With it: the shipped labels plus the judged production outcomes in
pointsman.evaluations (shadow evaluation, POINTSMAN_SHADOW_RATE), refitted and recalibrated
(routing/refit.py), old and new compared on held-out judgements. The router reloads the file when
it changes (POINTSMAN_ROUTER_MODEL): no restart of Kafka or of the router.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console

from infra.query_server import Reader
from pipeline.routing.grounded import Outcome, fit_outcomes, outcomes_from_labels
from pipeline.routing.refit import Judged, refit
from pipeline.routing.scorer import MODEL_FILE, GatedModel, load_model
from pipeline.semantic.embedders import StaticEmbedder

JUDGED_SQL = """
SELECT query_id, tenant, score, question
FROM pointsman.evaluations FINAL
WHERE question != '' AND route = 'slm'
ORDER BY evaluated_at, query_id
"""


def judged_outcomes(reader: Reader) -> list[Judged]:
    _, rows = reader.query(JUDGED_SQL)
    return [Judged(str(qid), Outcome(str(question), float(score), 1.0, str(tenant)))
            for qid, tenant, score, question in rows]


def save_atomically(model: GatedModel, out: Path) -> None:
    """The router may read the file at any moment: write aside, then rename over it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    model.save(tmp)
    os.replace(tmp, out)


def run_train_router(console: Console, dsn: str, out: Path, *, from_clickhouse: bool, target: float,
                     as_json: bool = False) -> int:
    from pipeline.eval.label_slm import read_labels

    embedder = StaticEmbedder()
    labels = outcomes_from_labels(read_labels())
    report: dict[str, Any]
    if from_clickhouse:
        from infra.query_server import open_reader

        judged = judged_outcomes(open_reader(dsn))
        if not judged:
            console.print("no judged outcomes in pointsman.evaluations (set POINTSMAN_SHADOW_RATE); "
                          "nothing written")
            return 1
        old = load_model(out if out.exists() else MODEL_FILE)
        if not isinstance(old, GatedModel):
            old = load_model(MODEL_FILE)
        model, report = refit(labels, judged, old, embedder, target=target)  # type: ignore[arg-type]
    else:
        model, _ = fit_outcomes(labels, embedder)
        report = {"labels": len(labels)}
    save_atomically(model, out)
    report["out"] = str(out)
    report["thresholds"] = {h: c.point_for(target) for h, c in model.curves.items()}
    if as_json:
        print(json.dumps(report, indent=1, default=str))
        return 0
    console.print(f"trained on {report['labels']} labelled outcomes"
                  + (f" + {report['judged_train']} judged ({report['judged_holdout']} held out)"
                     if from_clickhouse else "") + f"; wrote {out} (the router reloads it)")
    for name in ("old", "new"):
        if name in report:
            m = report[name]
            auc = "n/a" if m["auc_disagreement"] is None else f"{m['auc_disagreement']:.3f}"
            console.print(f"  {name}: held-out AUC {auc}, at target {target:.2f}: slm share "
                          f"{m['slm_share_at_target']:.1%}, quality {m['quality_at_target']:.1%}")
    return 0
