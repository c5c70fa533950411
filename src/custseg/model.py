"""A saved segmentation: preprocessing, the fitted algorithm, names, and how it was made.

:class:`SegmentationModel` assigns new customers (a feature table with the training columns)
to segments.  Files are written with skops, which rebuilds objects from an explicit list of
trusted types and never executes code from the file: a file with any other type is refused.

Assignment never crashes on odd customers: a category the model never saw, or a customer far
from every segment (farther from its nearest centre than any training customer but the
outermost 0.1 %, times 1.5), gets segment ``-1`` and a reason.

Retraining keeps segment ids stable: :func:`align` matches the new segments to the old ones
by the distance between their mean customers (Hungarian algorithm; per numeric feature, in
standard deviations of the table being segmented now), keeps the old id for each match, and
reports segments that are new or gone.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from custseg.cluster import ALGORITHMS, NOISE
from custseg.errors import ModelError
from custseg.outputs import cannot_write, publish_file, temp_file

__all__ = ["FORMAT", "FORMAT_VERSION", "SegmentationModel", "Alignment", "align", "load"]

FORMAT = "custseg-model"
FORMAT_VERSION = 1
_OUTLIER_QUANTILE = 0.999
_OUTLIER_FACTOR = 1.5


@dataclass
class SegmentationModel:
    """Everything needed to assign a customer to a segment.

    ``preprocessor`` maps the feature table (``feature_columns``) to the matrix the
    ``estimator`` was fitted on; ``centers`` are the segment centres in that matrix (one row
    per id in ``segment_ids``); ``segment_names`` maps id → name; ``categories`` lists the
    known values of each categorical column; ``run`` records how the model was made.
    """

    preprocessor: Any
    estimator: Any
    algorithm: str
    feature_columns: list[str]
    categories: dict[str, list[str]]
    segment_ids: list[int]
    segment_names: dict[int, str]
    centers: np.ndarray
    outlier_distance: float
    reference_means: dict[int, dict[str, float]] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    label_map: dict[int, int] = field(default_factory=dict)  # estimator label → stable segment id

    # --- building -----------------------------------------------------------------------

    @classmethod
    def from_fit(
        cls,
        *,
        features: pd.DataFrame,
        matrix: pd.DataFrame | np.ndarray,
        labels: np.ndarray,
        preprocessor: Any,
        estimator: Any,
        algorithm: str,
        feature_columns: list[str],
        segment_names: dict[int, str],
        run: dict[str, Any] | None = None,
        label_map: dict[int, int] | None = None,
    ) -> SegmentationModel:
        """Build a model from a finished fit (``matrix`` = ``preprocessor`` applied to ``features``).

        ``labels`` are the stable segment ids; ``label_map`` turns the estimator's own labels
        into them (identity when not given).
        """
        X = np.asarray(matrix, dtype="float64")
        labels = np.asarray(labels)
        ids = sorted(int(s) for s in set(labels.tolist()) if s != NOISE)
        centers = np.vstack([X[labels == s].mean(axis=0) for s in ids]) if ids else np.empty((0, X.shape[1]))
        distance = _nearest(X, centers)[1] if ids else np.zeros(len(X))
        kept = distance[labels != NOISE] if (labels != NOISE).any() else distance
        threshold = float(np.quantile(kept, _OUTLIER_QUANTILE) * _OUTLIER_FACTOR) if len(kept) else float("inf")
        categories = {
            c: sorted(str(v) for v in features[c].dropna().unique())
            for c in feature_columns if not pd.api.types.is_numeric_dtype(features[c])
        }
        numeric = [c for c in feature_columns if c not in categories]
        reference = {
            s: {c: float(features.loc[labels == s, c].mean()) for c in numeric} for s in ids
        }
        return cls(preprocessor, estimator, algorithm, list(feature_columns), categories, ids,
                   {int(k): v for k, v in segment_names.items()}, centers, threshold, reference,
                   dict(run or {}), {int(k): int(v) for k, v in (label_map or {}).items()})

    # --- assigning ----------------------------------------------------------------------

    def assign(self, features: pd.DataFrame) -> pd.DataFrame:
        """Columns ``customer_id, segment, segment_name, reason`` (+ ``probability`` when the
        algorithm gives memberships), one row per input row, in input order."""
        missing = [c for c in self.feature_columns if c not in features.columns]
        if missing:
            raise ModelError(
                f"the data lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)} that the model "
                f"was trained on; give a table with {', '.join(self.feature_columns)}"
            )
        frame = features[self.feature_columns]
        # Whole-array work only: a reason is built as text just for the rows that get one,
        # and ``flagged`` marks them (every reason is non-empty).
        n_rows = len(features)
        reasons = np.full(n_rows, "", dtype=object)
        flagged = np.zeros(n_rows, dtype=bool)
        for column, known in self.categories.items():
            values = frame[column].astype("string")
            unknown = (values.notna() & ~values.isin(known)).to_numpy(dtype=bool)
            if unknown.any():
                reasons[unknown] = [f"unknown {column} '{v}'" for v in values[unknown]]
                flagged |= unknown
        # Large batches run on one BLAS/OpenMP thread (see _one_thread): same numbers, and no
        # threads spin-waiting for each other when another process holds a core.
        with _one_thread(n_rows):
            transformed = self.preprocessor.transform(frame)
            X = _numeric_matrix(transformed)
            if isinstance(transformed, pd.DataFrame) and (transformed.dtypes == np.float64).all():
                # The same numbers in one block: the estimator's own conversion to an array is then
                # a view instead of a second copy of the matrix.
                transformed = pd.DataFrame(X, index=transformed.index, columns=transformed.columns, copy=False)
            on_table = _takes_the_table(self.algorithm)  # RFM rules read the features themselves
            segment = self.estimator.predict(frame if on_table else transformed)
            segment = np.asarray(segment).astype("int64")
            probability = None
            if hasattr(self.estimator, "predict_proba") and not on_table:
                probability = np.asarray(self.estimator.predict_proba(transformed)).max(axis=1)
            if self.label_map:
                segment = _lookup(segment, self.label_map, segment).astype("int64")
            if len(self.centers) and not on_table:
                distance = _nearest(X, self.centers)[1]
                far = (distance > self.outlier_distance) & ~flagged
                if far.any():
                    reasons[far] = [f"far from every segment (distance {d:.2f} > {self.outlier_distance:.2f})"
                                    for d in distance[far]]
                    flagged |= far
        noise = (segment == NOISE) & ~flagged
        if noise.any():
            reasons[noise] = "in no dense region (noise)"
            flagged |= noise
        segment = np.where(flagged, NOISE, segment)
        columns: dict[str, Any] = {
            "customer_id": _column_values(features["customer_id"]) if "customer_id" in features else np.arange(n_rows),
            "segment": segment,
            "segment_name": _lookup(segment, self.segment_names, "Unassigned"),
        }
        if probability is not None:
            columns["probability"] = np.where(segment == NOISE, np.nan, probability)
        columns["reason"] = reasons
        return pd.DataFrame(columns)

    # --- files --------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model to ``path`` (skops format), atomically."""
        import skops.io as sio

        path = Path(path)
        payload = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "preprocessor": self.preprocessor,
            "estimator": self.estimator,
            "centers": np.asarray(self.centers, dtype="float64"),
            "meta": json.dumps({
                "algorithm": self.algorithm,
                "feature_columns": self.feature_columns,
                "categories": self.categories,
                "segment_ids": self.segment_ids,
                "segment_names": {str(k): v for k, v in self.segment_names.items()},
                "outlier_distance": self.outlier_distance,
                "reference_means": {str(k): v for k, v in self.reference_means.items()},
                "run": self.run,
                "label_map": {str(k): v for k, v in self.label_map.items()},
            }, default=str),
        }
        try:
            fd, tmp = temp_file(path)
        except OSError as exc:
            raise cannot_write(path, exc) from None
        os.close(fd)
        try:
            sio.dump(payload, tmp)
            publish_file(tmp, path)
        except OSError as exc:
            raise cannot_write(path, exc) from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path


def import_writer() -> None:
    """Import what :meth:`SegmentationModel.save` needs, ahead of a save in this process: skops
    lists every scikit-learn estimator on import, which imports all of scikit-learn (0.3-1 s)."""
    import skops.io  # noqa: F401


def load(path: str | os.PathLike[str]) -> SegmentationModel:
    """Read a model written by :meth:`SegmentationModel.save`; refuses untrusted content."""
    import skops.io as sio

    path = Path(path)
    if path.is_dir():  # a run folder: its model
        if not (path / "model.skops").is_file():
            raise ModelError(f"{path}: is a folder without model.skops; give a model file written by `custseg segment`")
        path = path / "model.skops"
    if not path.is_file():
        raise ModelError(f"{path}: no such model file; train one with `custseg segment`")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: is not a custseg model (not a skops archive); it may be corrupt — train it again")
    try:
        untrusted = sio.get_untrusted_types(file=str(path))
        unexpected = [t for t in untrusted if not _trusted(t)]
        if unexpected:
            raise ModelError(
                f"{path}: contains types custseg does not load ({', '.join(unexpected[:3])}); "
                "only models written by custseg are accepted"
            )
        payload = sio.load(str(path), trusted=untrusted)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{path}: cannot be read as a custseg model ({type(exc).__name__}: {exc}); train it again") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path}: is a skops file but not a custseg model")
    version = payload.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelError(
            f"{path}: was written by a newer custseg (model format {version}, this one reads "
            f"up to {FORMAT_VERSION}); upgrade custseg"
        )
    meta = json.loads(payload["meta"])
    return SegmentationModel(
        preprocessor=payload["preprocessor"],
        estimator=payload["estimator"],
        algorithm=meta["algorithm"],
        feature_columns=list(meta["feature_columns"]),
        categories={k: list(v) for k, v in meta["categories"].items()},
        segment_ids=[int(s) for s in meta["segment_ids"]],
        segment_names={int(k): v for k, v in meta["segment_names"].items()},
        centers=np.asarray(payload["centers"], dtype="float64"),
        outlier_distance=float(meta["outlier_distance"]),
        reference_means={int(k): v for k, v in meta["reference_means"].items()},
        run=meta["run"],
        label_map={int(k): int(v) for k, v in meta.get("label_map", {}).items()},
    )


# Types a custseg model may hold beyond skops' defaults: scikit-learn, NumPy, SciPy, kmodes
# and custseg's own estimators.  Anything else in a file is refused.
_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "custseg.", "kmodes.")


def _takes_the_table(algorithm: str) -> bool:
    """Whether the estimator of ``algorithm`` reads the feature table itself (the registry's
    ``input == "rfm"``) rather than the preprocessed matrix."""
    spec = ALGORITHMS.get(algorithm)  # a model file may name an algorithm this version lacks
    return spec is not None and spec.input == "rfm"


def _trusted(type_name: str) -> bool:
    return type_name.startswith(_TRUSTED_PREFIXES)


def _nearest(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of and distance to the nearest centre for each row (chunked to bound memory).

    Squared distances are ``|x|^2 - x.(2c) + |c|^2`` (``x.(2c)`` equals ``(2x).c`` bit for
    bit: doubling is exact), in blocks of 32k rows, whose temporaries stay small.
    """
    index = np.empty(len(X), dtype="int64")
    distance = np.empty(len(X), dtype="float64")
    sq_centers = (centers ** 2).sum(axis=1)
    twice_t = 2 * centers.T
    for start in range(0, len(X), _BLOCK_ROWS):
        block = X[start:start + _BLOCK_ROWS]
        d2 = (block ** 2).sum(axis=1)[:, None] - block @ twice_t + sq_centers[None, :]
        stop = start + len(block)
        index[start:stop] = d2.argmin(axis=1)
        np.sqrt(np.maximum(d2.min(axis=1), 0), out=distance[start:stop])
    return index, distance


_BLOCK_ROWS = 32_768

# From this many rows on, assign() limits BLAS and OpenMP to one thread.  Its products are
# skinny (n x features times features x k) and memory-bound, so a second thread gains little;
# measured on 2 cores with 1M customers, the nearest-centre step took 0.15 s with either
# setting on an idle machine, but 0.5-1.1 s with two threads against 0.15-0.23 s with one
# while another process kept a core busy (threads spin-waiting for a descheduled partner).
# Per-row results do not depend on the thread count.  Small inputs skip the limit, which
# costs ~50 us.
_ONE_THREAD_MIN_ROWS = 65_536


@functools.cache
def _thread_controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _one_thread(n_rows: int) -> contextlib.AbstractContextManager[Any]:
    if n_rows < _ONE_THREAD_MIN_ROWS:
        return contextlib.nullcontext()
    return _thread_controller().limit(limits=1)


def _lookup(ids: np.ndarray, mapping: dict[int, Any], default: Any) -> np.ndarray:
    """``mapping.get(id, default)`` for every id (``default`` a scalar or an array like
    ``ids``), as one array lookup instead of a dictionary lookup per customer."""
    if not mapping:
        return np.broadcast_to(np.asarray(default, dtype=object), ids.shape).copy()
    keys = np.array(sorted(mapping), dtype="int64")
    values = np.array([mapping[k] for k in keys.tolist()], dtype=object)
    position = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
    return np.where(keys[position] == ids, values[position], default)


def _numeric_matrix(transformed: Any) -> np.ndarray:
    """The numeric columns of the preprocessor's output as a float64 matrix."""
    if isinstance(transformed, pd.DataFrame):
        if not (transformed.dtypes == np.float64).all():
            transformed = transformed.select_dtypes("number")
    return np.asarray(transformed, dtype="float64")


def _column_values(series: pd.Series) -> Any:
    """What ``pd.DataFrame({name: series.to_numpy()})`` would store, without the round trip
    through Python objects when the column already has the text dtype pandas infers."""
    if not isinstance(series.dtype, np.dtype) and series.dtype == _inferred_text_dtype():
        return series.array
    return series.to_numpy()


@functools.cache
def _inferred_text_dtype() -> Any:
    """The dtype pandas gives a column of Python strings (``str`` in pandas 3, else object)."""
    return pd.Series(np.array(["x"], dtype=object)).dtype


# --- stable ids across retraining ----------------------------------------------------------

@dataclass(frozen=True)
class Alignment:
    """``mapping``: new label → stable id; ``matched``: (new label, old id, distance);
    ``new``: stable ids given to segments with no old counterpart; ``gone``: old ids with
    no new counterpart."""

    mapping: dict[int, int]
    matched: tuple[tuple[int, int, float], ...]
    new: tuple[int, ...]
    gone: tuple[int, ...]


def align(
    new_means: dict[int, dict[str, float]],
    old_means: dict[int, dict[str, float]],
    *,
    scale: dict[str, float] | None = None,
    max_distance: float = 1.0,
) -> Alignment:
    """Match new segments to old ones by the distance between their mean customers.

    Means are per numeric feature, in the features' own (unscaled) units: the old ones are the
    model's ``reference_means``.  Each feature's difference is divided by ``scale[feature]``
    (1 when not given) so no feature dominates; the distance of a pair is the root mean square
    of those differences over the features both sides share.  Pairs farther apart than
    ``max_distance`` (in those units) are not matched.

    The retraining step (:func:`custseg.pipeline.fit.fit`) passes the standard deviation of each
    feature in the table being segmented now.  That is the one spread both means can be measured
    in: a model keeps its training means but not their spread, and its preprocessor (logs,
    clipping, then standardizing) maps customers, not means, so "the old model's standardized
    units" cannot be computed from what a model holds.

    >>> old = {0: {"spend": 100.0, "orders": 2.0}, 1: {"spend": 900.0, "orders": 10.0}}
    >>> new = {0: {"spend": 880.0, "orders": 9.0}, 1: {"spend": 150.0, "orders": 2.0}}
    >>> got = align(new, old, scale={"spend": 400.0, "orders": 4.0})
    >>> got.mapping, [(n, o, round(d, 3)) for n, o, d in got.matched]
    ({0: 1, 1: 0}, [(0, 1, 0.18), (1, 0, 0.088)])
    """
    new_ids, old_ids = sorted(new_means), sorted(old_means)
    columns = sorted(set.intersection(*(set(m) for m in [*new_means.values(), *old_means.values()])) if new_ids and old_ids else set())
    if not columns:
        start = max(old_ids, default=-1) + 1
        mapping = {n: start + i for i, n in enumerate(new_ids)}
        return Alignment(mapping, (), tuple(mapping.values()), tuple(old_ids))
    scale = scale or {}
    units = np.array([scale.get(c) or 1.0 for c in columns])
    A = np.array([[new_means[n][c] for c in columns] for n in new_ids]) / units
    B = np.array([[old_means[o][c] for c in columns] for o in old_ids]) / units
    cost = np.sqrt(((A[:, None, :] - B[None, :, :]) ** 2).mean(axis=2))
    rows, cols = linear_sum_assignment(cost)
    mapping: dict[int, int] = {}
    matched = []
    for r, c in zip(rows, cols):
        if cost[r, c] <= max_distance:
            mapping[new_ids[r]] = old_ids[c]
            matched.append((new_ids[r], old_ids[c], float(cost[r, c])))
    next_id = max(old_ids, default=-1) + 1
    fresh = []
    for n in new_ids:
        if n not in mapping:
            mapping[n] = next_id
            fresh.append(next_id)
            next_id += 1
    gone = tuple(o for o in old_ids if o not in {m[1] for m in matched})
    return Alignment(mapping, tuple(matched), tuple(fresh), gone)
