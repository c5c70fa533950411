"""Describe: RFM codes, profiles and names of the fitted segments, the run record and the model."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from custseg.pipeline.choose import Choice
from custseg.pipeline.fit import Fitted
from custseg.pipeline.prepare import CustomerTable, Prepared, naming
from custseg.request import SegmentConfig

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from custseg.model import Alignment, SegmentationModel
    from custseg.profiling import Profiles
    from custseg.rfm import SegmentMap
    from custseg.selection import SelectionResult

__all__ = ["SegmentationResult", "describe"]


@dataclass(frozen=True)
class SegmentationResult:
    """Everything one run produced (frozen; :mod:`custseg.runs` writes it)."""

    config: SegmentConfig
    customers: CustomerTable
    feature_columns: list[str]
    preprocessing: list[str]
    selection: SelectionResult
    algorithm: str
    n_clusters: int
    labels: np.ndarray  # one per customer, -1 = noise
    assignments: pd.DataFrame
    profiles: Profiles
    model: SegmentationModel
    rfm: pd.DataFrame | None
    matrix: pd.DataFrame
    alignment: Alignment | None = None  # when retrained against a previous model


def describe(
    prepared: Prepared,
    choice: Choice,
    fitted: Fitted,
    *,
    config: SegmentConfig = SegmentConfig(),
    segment_map: SegmentMap | None = None,
    started: float,
) -> SegmentationResult:
    """Profile and name the segments, record the run and package the model."""
    import platform
    import time

    import numpy as np
    import pandas as pd
    import sklearn

    from custseg import profiling, rfm
    from custseg.model import SegmentationModel

    made, features, labels, spec = prepared.customers, prepared.features, fitted.labels, fitted.spec
    used, algorithm, k = prepared.columns, choice.algorithm, choice.n_clusters
    segment_map = rfm.DEFAULT_SEGMENT_MAP if segment_map is None else segment_map
    scored = rfm.score(features, segment_map=segment_map) if all(c in features for c in ("recency_days", "frequency", "monetary")) else None
    with naming(prepared.loaded):  # e.g. an unknown --value column
        profiles = profiling.profile(
            features, labels, random_state=config.random_state,
            rfm_segments=scored["rfm_segment"] if scored is not None else None,
            outcomes=made.outcomes, value_column=config.value_column,
        )
    names = {p.segment: p.name for p in profiles.segments}
    run = {
        "source": prepared.loaded.table.label,
        "kind": made.kind,
        "customers": len(features),
        "as_of": made.as_of.isoformat(),
        "config": {"algorithm": algorithm, "n_clusters": int(k) if k else None, "features": used,
                   "random_state": config.random_state},
        "outcomes": list(made.outcomes),
        "customer_id": made.id_name,
        "fingerprint": _fingerprint(features[used]),
        "versions": {"custseg": _version(), "scikit-learn": sklearn.__version__, "numpy": np.__version__,
                     "pandas": pd.__version__, "python": platform.python_version()},
        "trained_at": datetime.now().isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 2),
    }
    model = SegmentationModel.from_fit(
        features=features, matrix=prepared.numeric if spec.input != "rfm" else features[used],
        labels=labels, preprocessor=prepared.preprocessor.transformer, estimator=fitted.estimator,
        algorithm=algorithm, feature_columns=used, segment_names=names, run=run, label_map=fitted.label_map,
    )
    assignments = pd.DataFrame({
        "customer_id": features["customer_id"].to_numpy(),
        "segment": labels,
        "segment_name": [names.get(int(s), "Unassigned") for s in labels],
    })
    if spec.has_proba:
        assignments["probability"] = np.asarray(fitted.estimator.predict_proba(prepared.matrix)).max(axis=1)
    return SegmentationResult(
        config=config, customers=made, feature_columns=used, preprocessing=list(prepared.preprocessor.report),
        selection=choice.selection, algorithm=algorithm, n_clusters=int(len(names) - (1 if -1 in names else 0)),
        labels=labels, assignments=assignments, profiles=profiles, model=model, rfm=scored,
        matrix=prepared.matrix, alignment=fitted.alignment,
    )


def _fingerprint(frame: pd.DataFrame) -> str:
    import hashlib

    import pandas as pd

    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return f"sha256:{digest.hexdigest()[:16]} ({len(frame)} rows × {frame.shape[1]} columns)"


def _version() -> str:
    from custseg import __version__

    return __version__
