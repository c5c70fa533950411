"""A saved model compiled once into NumPy arrays, to assign one customer in microseconds.

:meth:`custseg.model.SegmentationModel.assign` runs the fitted scikit-learn
``ColumnTransformer`` and the estimator's ``predict``: milliseconds for one customer, nearly
all of it per-call overhead (validation, pandas frames, one pipeline per column group).
:func:`compile_model` reads the fitted parameters out of the model once and
:class:`CompiledModel` applies them with a handful of array operations:

- per numeric column: the imputed value (median, or most frequent value for 0/1 flags), the
  transform (``log1p``; Yeo-Johnson with its lambda, and the standardisation a
  ``PowerTransformer(standardize=True)`` applies), the scaler's centre and scale (standard
  or robust scaling; flags are left unscaled);
- per categorical column: the imputed value and the one-hot categories → output positions;
  an unseen category gives an all-zero block, as the fitted encoder
  (``handle_unknown="ignore"``) does, and the customer is unassigned as ``assign`` does;
- the output column order of the ``ColumnTransformer``;
- the estimator, by algorithm:

  ========================  ====================================================================
  kmeans, minibatch         nearest ``cluster_centers_`` (``|c|² - 2 x·c``, as scikit-learn's
                            K-Means ``predict``)
  bisecting_kmeans          down the tree of splits, the nearer of two children at each split
                            (scikit-learn's ``predict``; not always the nearest leaf centre);
                            a model fitted on Spark holds its leaf centres only: the nearest
  agglomerative (Ward)      nearest segment centroid (``cluster_centers_``)
  birch                     nearest subcluster centre, then that subcluster's label
  meanshift                 nearest mode; farther than the bandwidth is noise when
                            ``cluster_all=False``
  gmm                       argmax of the weighted log-probability from ``means_``,
                            ``precisions_cholesky_``, ``weights_`` for every ``covariance_type``
                            (full, tied, diag, spherical)
  kprototypes               lowest cost: squared distance to the numeric prototype plus
                            ``gamma_`` times the categorical mismatches (categories as codes)
  rfm                       the learned quintile edges of the raw ``recency_days``,
                            ``frequency``, ``monetary`` and the 5×5×5 table of segment codes
  dbscan                    the label of the nearest core customer within ``eps`` (distances
                            summed column by column as the estimator's k-d / ball tree sums
                            them), for one customer or a few; larger batches, and a model whose
                            neighbour index is brute force (over 15 columns), use the
                            estimator's own rule (below)
  hdbscan                   not compiled: its rule needs the distance to the k-th nearest of
                            up to 20,000 fitted customers, which the fitted neighbour index
                            answers.  The preprocessing is compiled and the matrix goes to the
                            estimator's own rule (``_assign``, what its ``predict`` runs after
                            validating its input), so the answer is the estimator's; one
                            customer costs that index's queries (~1 ms)
  ========================  ====================================================================

  then the model's own rules: ``label_map`` (estimator label → stable segment id), a
  customer farther from the nearest segment centre than ``outlier_distance`` is unassigned
  ("far from every segment"), noise (``-1``) is "in no dense region (noise)".  A model whose
  preprocessing or estimator is anything else is not compiled: :class:`CompiledModel` then
  calls the model's own ``assign`` (``fallback`` says why).

The numbers are the ones scikit-learn computes — the same NumPy/SciPy elementwise functions
and the same formulas in the same order — so the segments are those of ``model.assign``
(``tests/test_scoring.py`` checks every customer of the Online Retail, Customer Personality
and Mall Customers tables, and that the matrix equals the preprocessor's bit for bit).  The
answers have no ``probability``: ``assign`` adds it for Gaussian mixtures.

What a customer's values can be, as ``model.assign`` reads them (a one-row
``pd.DataFrame([record])``):

- a number, or text that ``float()`` reads (``"12.5"``, ``" 7 "``): the number;
- ``None``/NaN (or text ``"nan"``): missing, imputed like ``assign`` does — except for the
  RFM rules, which need all three numbers (``assign`` raises there): unassigned, "missing X";
- a category the model never saw: unassigned, ``"unknown X 'value'"`` (``assign``'s reason);
- a field absent from the record, text that is not a number (``"abc"``), an infinite number,
  or one the transform overflows: ``assign`` raises for the whole table there (a missing
  column is a ``ModelError``, the others a ``ValueError``); here only that customer is
  unassigned, with a reason naming the field (``"missing monetary"``,
  ``"monetary 'abc' is not a number"``, ``"monetary inf is not a finite number"``).

>>> import numpy as np, pandas as pd
>>> from custseg.cluster import make_estimator
>>> from custseg.model import SegmentationModel
>>> from custseg.preprocessing import build_preprocessor
>>> table = pd.DataFrame({"customer_id": ["a", "b", "c", "d"], "monetary": [1.0, 2.0, 50.0, 60.0],
...                       "plan": ["x", "x", "y", "y"]})
>>> prep = build_preprocessor(table)
>>> matrix = prep.fit_transform(table[prep.columns])
>>> kmeans = make_estimator("kmeans", n_clusters=2).fit(matrix)
>>> model = SegmentationModel.from_fit(features=table, matrix=matrix, labels=kmeans.labels_,
...     preprocessor=prep.transformer, estimator=kmeans, algorithm="kmeans",
...     feature_columns=prep.columns, segment_names={0: "small", 1: "big"})
>>> compiled = compile_model(model)
>>> [r["segment"] for r in compiled.assign_records(table.to_dict("records"))] == kmeans.labels_.tolist()
True
>>> compiled.assign_records([{"customer_id": "e", "monetary": 55.0, "plan": "z"}])[0]["reason"]
"unknown plan 'z'"
"""

from __future__ import annotations

import contextlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from custseg.errors import ModelError
from custseg.model import _ONE_THREAD_MIN_ROWS, NOISE, SegmentationModel, _one_thread

__all__ = ["ABSENT", "CompiledModel", "compile_model"]

#: Rows per block of the distance computations (as :func:`custseg.model._nearest`).
_BLOCK_ROWS = 32_768

_ABSENT = object()
#: the value :meth:`CompiledModel.assign_columns` takes for a field a record does not have
ABSENT = _ABSENT
# From this many records on, a batch is read column by column (one NumPy conversion per
# column); fewer go value by value, which is faster for a handful.
COLUMNWISE_MIN_RECORDS = 16
# Values a column may hold to be converted by NumPy at once (None is NaN there, as here).
_PLAIN_NUMBER_TYPES = frozenset({float, int, type(None), np.float64, np.float32, np.int64, np.int32})
_DIRECT_LOOKUP_ROWS = 20_000
# From this many rows a block on each core: NumPy releases the GIL in the transform and the
# distances, so blocks on two cores take half the time (1M x 16 on 2 cores: see bench/segment.py)
_PARALLEL_MIN_ROWS = 200_000
# From this many rows assign_frame makes its text columns from their few distinct strings
_TEXT_MIN_ROWS = 10_000
_EPS = float(np.finfo(np.float64).eps)  # scipy's test for lambda 0 and 2


class _NotCompilable(Exception):
    """The model holds something this module does not reproduce; its message says what."""


# --- preprocessing ---------------------------------------------------------------------------


@dataclass
class _Group:
    """Output columns ``start:stop`` of the numeric block and the steps between the imputer and
    the final scaler: ``("log1p",)``, ``("yeo_johnson", lambdas)``, ``("affine", centre, scale)``."""

    start: int
    stop: int
    steps: list[tuple[Any, ...]]


@dataclass
class _Categorical:
    column: str
    known: frozenset[str]  # what model.assign calls known (model.categories)
    impute: str | None  # the imputer's value, None when no imputer
    codes: dict[str, int]  # category → code (its position among the encoder's categories)
    offset: int  # first output column of its one-hot block (-1 without one-hot)
    index: pd.Index = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = pd.Index(list(self.codes), dtype=object)
        self.known_list = sorted(self.known)
        self.exact = set(self.codes) == set(self.known)  # codes exist for the known values only


@dataclass
class _Layout:
    numeric: list[str]  # numeric input columns, in output order
    impute: np.ndarray  # per numeric column; NaN = no imputer
    groups: list[_Group]
    center: np.ndarray  # the last scaler of each column (0 / 1 where none)
    scale: np.ndarray
    categorical: list[_Categorical]
    one_hot: bool
    n_out: int  # columns of the matrix (numeric + one-hot)


def _function_name(transformer: Any) -> str | None:
    func = getattr(transformer, "func", None)
    return None if func is None else f"{getattr(func, '__module__', '')}.{getattr(func, '__name__', '')}"


def _steps(pipeline: Any) -> list[tuple[str, Any]]:
    from sklearn.pipeline import Pipeline

    if isinstance(pipeline, Pipeline):
        return list(pipeline.steps)
    return [("only", pipeline)]


def _affine(step: Any) -> tuple[np.ndarray | float, np.ndarray | float] | None:
    """(centre, scale) of a fitted StandardScaler / RobustScaler, else None."""
    from sklearn.preprocessing import RobustScaler, StandardScaler

    if isinstance(step, StandardScaler):
        center = step.mean_ if step.with_mean else 0.0
        scale = step.scale_ if step.with_std else 1.0
    elif isinstance(step, RobustScaler):
        center = step.center_ if step.with_centering else 0.0
        scale = step.scale_ if step.with_scaling else 1.0
    else:
        return None
    return (np.asarray(center, dtype="float64") if not np.isscalar(center) else center,
            np.asarray(scale, dtype="float64") if not np.isscalar(scale) else scale)


def _numeric_group(name: str, pipeline: Any, n_columns: int) -> tuple[np.ndarray, list[tuple[Any, ...]],
                                                                        np.ndarray, np.ndarray]:
    """Impute values, middle steps and final (centre, scale) of one numeric pipeline."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import FunctionTransformer, PowerTransformer

    impute = np.full(n_columns, np.nan)
    steps: list[tuple[Any, ...]] = []
    seen_work = False
    for step_name, step in _steps(pipeline):
        if step in (None, "passthrough"):
            continue
        if isinstance(step, FunctionTransformer):
            func = _function_name(step)
            if func in (None, "custseg.preprocessing._to_float") and not seen_work:
                continue  # the float conversion is how values are read
            if step.func is np.log1p and not step.kw_args:
                steps.append(("log1p",))
                seen_work = True
                continue
            raise _NotCompilable(f"numeric step {name}/{step_name} is the function {func}")
        if isinstance(step, SimpleImputer):
            if seen_work or steps or getattr(step, "add_indicator", False):
                raise _NotCompilable(f"numeric step {name}/{step_name}: an imputer after other steps")
            missing = step.missing_values
            if not (isinstance(missing, float) and math.isnan(missing)):
                raise _NotCompilable(f"numeric step {name}/{step_name} imputes {missing!r}, not NaN")
            statistics = np.asarray(step.statistics_, dtype="float64")
            if statistics.shape != (n_columns,) or not np.isfinite(statistics).all():
                raise _NotCompilable(f"numeric step {name}/{step_name} has no value for some columns")
            impute = statistics
            seen_work = True
            continue
        if isinstance(step, PowerTransformer):
            if step.method != "yeo-johnson":
                raise _NotCompilable(f"numeric step {name}/{step_name} is a {step.method} transform")
            steps.append(("yeo_johnson", np.asarray(step.lambdas_, dtype="float64")))
            if step.standardize:
                steps.append(("affine", *_affine(step._scaler)))
            seen_work = True
            continue
        affine = _affine(step)
        if affine is not None:
            steps.append(("affine", *affine))
            seen_work = True
            continue
        raise _NotCompilable(f"numeric step {name}/{step_name} is a {type(step).__name__}")
    center, scale = np.zeros(n_columns), np.ones(n_columns)
    if steps and steps[-1][0] == "affine":
        _, c, s = steps.pop()
        center = np.broadcast_to(np.asarray(c, dtype="float64"), (n_columns,)).copy()
        scale = np.broadcast_to(np.asarray(s, dtype="float64"), (n_columns,)).copy()
    return impute, steps, center, scale


def _layout(model: SegmentationModel) -> _Layout:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    transformer = getattr(model.preprocessor, "transformer", model.preprocessor)
    if not isinstance(transformer, ColumnTransformer):
        raise _NotCompilable(f"the preprocessor is a {type(transformer).__name__}, not a ColumnTransformer")
    numeric: list[str] = []
    impute, center, scale = [], [], []
    groups: list[_Group] = []
    categorical: list[_Categorical] = []
    one_hot = False
    position = 0
    for name, pipeline, columns in transformer.transformers_:
        if pipeline == "drop" or name == "remainder":
            if pipeline not in ("drop",) and len(columns):
                raise _NotCompilable(f"the remainder ({pipeline}) keeps columns {list(columns)}")
            continue
        columns = [str(c) for c in columns]
        if not columns:
            continue
        out = transformer.output_indices_[name]
        if out.start != position:
            raise _NotCompilable(f"output columns of {name} do not follow the previous ones")
        steps = _steps(pipeline)
        first = steps[0][1]
        if isinstance(first, FunctionTransformer) and _function_name(first) == "custseg.preprocessing._to_text":
            if categorical and one_hot != any(isinstance(s, OneHotEncoder) for _, s in steps):
                raise _NotCompilable("categorical groups encoded differently")
            imputer = next((s for _, s in steps if isinstance(s, SimpleImputer)), None)
            encoder = next((s for _, s in steps if isinstance(s, OneHotEncoder)), None)
            others = [n for n, s in steps[1:] if s is not imputer and s is not encoder]
            if others:
                raise _NotCompilable(f"categorical steps {others} of {name}")
            one_hot = encoder is not None
            if encoder is not None:
                if encoder.drop_idx_ is not None or getattr(encoder, "_infrequent_enabled", False):
                    raise _NotCompilable(f"{name}: a one-hot encoder that drops or groups categories")
                if encoder.handle_unknown not in ("ignore", "infrequent_if_exist", "warn"):
                    raise _NotCompilable(f"{name}: a one-hot encoder that refuses unknown categories")
            offset = out.start
            for j, column in enumerate(columns):
                value = None
                if imputer is not None:
                    value = str(imputer.statistics_[j])
                if encoder is not None:
                    categories = [str(c) for c in encoder.categories_[j]]
                    codes = {c: i for i, c in enumerate(categories)}
                    categorical.append(_Categorical(column, frozenset(model.categories.get(column, categories)),
                                                    value, codes, offset))
                    offset += len(categories)
                else:
                    known = list(model.categories.get(column, []))
                    vocabulary = list(dict.fromkeys([*known, *([value] if value is not None else [])]))
                    categorical.append(_Categorical(column, frozenset(known), value,
                                                    {c: i for i, c in enumerate(vocabulary)}, -1))
                    offset += 1
            if offset != out.stop:
                raise _NotCompilable(f"{name}: {out.stop - out.start} output columns, expected {offset - out.start}")
        else:
            if categorical:
                raise _NotCompilable("numeric output columns after categorical ones")
            values, middle, c, s = _numeric_group(name, pipeline, len(columns))
            if out.stop - out.start != len(columns):
                raise _NotCompilable(f"{name}: {out.stop - out.start} output columns for {len(columns)} inputs")
            groups.append(_Group(len(numeric), len(numeric) + len(columns), middle))
            numeric.extend(columns)
            impute.append(values)
            center.append(c)
            scale.append(s)
        position = out.stop
    def joined(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.empty(0)

    return _Layout(numeric, joined(impute), [g for g in groups if g.steps], joined(center), joined(scale),
                   categorical, one_hot, position)


def _yeo_johnson(x: np.ndarray, lambdas: np.ndarray) -> np.ndarray:
    """``scipy.stats.yeojohnson(x[:, j], lambdas[j])`` for every column j, the same operations."""
    eps = _EPS
    out = np.empty_like(x)
    pos = x >= 0
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for j, lmbda in enumerate(lambdas):
            col, p = x[:, j], pos[:, j]
            xp = col[p]  # a contiguous copy, as scipy's x[pos]
            n_idx = None if len(xp) == len(col) else ~p
            if abs(lmbda) < eps:
                yp = np.log1p(xp)
            else:
                yp = np.expm1(lmbda * np.log1p(xp)) / lmbda
            if n_idx is None:
                out[:, j] = yp
                continue
            out[p, j] = yp
            xn = col[n_idx]
            if abs(lmbda - 2) > eps:
                out[n_idx, j] = -np.expm1((2 - lmbda) * np.log1p(-xn)) / (2 - lmbda)
            else:
                out[n_idx, j] = -np.log1p(-xn)
    return out


# --- estimators --------------------------------------------------------------------------------


class _Rule:
    """Raw estimator labels from the matrix ``X`` (numeric block first, then one-hot columns)
    and, for K-Prototypes, the category codes."""

    n_labels: int = 0

    def labels(self, X: np.ndarray, codes: np.ndarray | None) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


class _NearestCentre(_Rule):
    """argmin over centres of ``|c|² - x·(2c)`` (K-Means ``predict``; Ward; BIRCH subclusters)."""

    def __init__(self, centers: np.ndarray, labels: np.ndarray | None = None,
                 sq_norms: np.ndarray | None = None) -> None:
        centers = np.ascontiguousarray(centers, dtype="float64")
        self.twice_t = np.ascontiguousarray((2 * centers).T)
        self.sq = (np.einsum("ij,ij->i", centers, centers) if sq_norms is None
                   else np.asarray(sq_norms, dtype="float64"))
        self.map = None if labels is None else np.asarray(labels, dtype="int64")
        self.n_labels = int(self.map.max()) + 1 if self.map is not None else len(centers)

    def labels(self, X, codes):
        if len(X) <= _BLOCK_ROWS:
            out = (self.sq - X @ self.twice_t).argmin(axis=1)
        else:
            out = np.empty(len(X), dtype="int64")
            for start in range(0, len(X), _BLOCK_ROWS):
                block = X[start:start + _BLOCK_ROWS]
                out[start:start + len(block)] = (self.sq - block @ self.twice_t).argmin(axis=1)
        return out if self.map is None else self.map[out]


class _Bisection(_Rule):
    """Bisecting K-Means ``predict``: from the root of the tree of splits, each customer goes
    to the nearer of a node's two children (``|c|² - x·(2c)``, the first on a tie, as
    scikit-learn's K-Means rule) until it reaches a leaf, whose label it gets.  That is not
    always the nearest leaf centre: a customer near the border of an early split stays on its
    side of it."""

    def __init__(self, estimator: Any) -> None:
        tree = getattr(estimator, "_bisecting_tree", None)
        if tree is None:
            raise _NotCompilable("a Bisecting K-Means without its tree of splits")
        # the tree's centres are kept relative to the training mean, added back in predict
        shift = getattr(estimator, "_X_mean", None)
        # one entry per split: (2 x both children's centres, transposed; their |c|²; children),
        # a child being the index of its split or, for a leaf, -1 - its label
        self.splits: list[tuple[np.ndarray, np.ndarray, tuple[int, int]]] = []
        self.root = self._flatten(tree, None if shift is None else np.asarray(shift, dtype="float64"))
        self.n_labels = int(estimator.n_clusters)

    def _flatten(self, node: Any, shift: np.ndarray | None) -> int:
        if node.left is None:
            if getattr(node, "label", None) is None:
                raise _NotCompilable("a Bisecting K-Means leaf without a label")
            return -1 - int(node.label)
        index = len(self.splits)
        self.splits.append(None)  # type: ignore[arg-type]  # filled below, children first
        centers = np.vstack((node.left.center, node.right.center)).astype("float64")
        if shift is not None:
            centers += shift
        children = (self._flatten(node.left, shift), self._flatten(node.right, shift))
        self.splits[index] = (np.ascontiguousarray((2 * centers).T), np.einsum("ij,ij->i", centers, centers),
                              children)
        return index

    def labels(self, X, codes):
        if len(X) == 1:  # one customer (the real-time path): a walk without index arrays
            x, node = X[0], self.root
            while node >= 0:
                twice_t, sq, children = self.splits[node]
                d = sq - x @ twice_t
                node = children[1] if d[1] < d[0] else children[0]
            return np.array([-1 - node], dtype="int64")
        out = np.empty(len(X), dtype="int64")
        pending = [(self.root, np.arange(len(X)))]
        while pending:
            node, rows = pending.pop()
            if node < 0:
                out[rows] = -1 - node
                continue
            if not len(rows):
                continue
            twice_t, sq, (left, right) = self.splits[node]
            block = X[rows]
            go_right = (sq - block @ twice_t).argmin(axis=1).astype(bool)
            pending.append((left, rows[~go_right]))
            pending.append((right, rows[go_right]))
        return out


def _nearest_row(X: np.ndarray, rows_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of, and distance to, the nearest of the rows (given transposed, one row per
    column) for each row of ``X``; squared distances summed column by column,
    ``d += (x_j - r_j)²``, as scikit-learn's k-d and ball trees sum them."""
    d2 = np.zeros((len(X), rows_t.shape[1]))
    for j in range(rows_t.shape[0]):
        t = X[:, j, None] - rows_t[j]
        d2 += t * t
    nearest = d2.argmin(axis=1)
    return nearest, np.sqrt(d2[np.arange(len(X)), nearest])


class _NearestMode(_Rule):
    """Mean Shift: the nearest mode; beyond the bandwidth is noise unless ``cluster_all``."""

    def __init__(self, modes: np.ndarray, bandwidth: float | None) -> None:
        self.modes_t = np.ascontiguousarray(np.asarray(modes, dtype="float64").T)
        self.bandwidth = bandwidth
        self.n_labels = self.modes_t.shape[1]

    def labels(self, X, codes):
        out = np.empty(len(X), dtype="int64")
        step = max(1, _BLOCK_ROWS // max(1, self.n_labels))
        for start in range(0, len(X), step):
            nearest, distance = _nearest_row(X[start:start + step], self.modes_t)
            if self.bandwidth is not None:
                nearest[distance > self.bandwidth] = NOISE
            out[start:start + len(nearest)] = nearest
        return out


class _Mixture(_Rule):
    """Gaussian mixture ``predict``: argmax of ``log N(x | mean_k, cov_k) + log weight_k`` with
    scikit-learn's formulas for each covariance type."""

    def __init__(self, mixture: Any) -> None:
        self.kind = mixture.covariance_type
        means = np.asarray(mixture.means_, dtype="float64")
        chol = np.asarray(mixture.precisions_cholesky_, dtype="float64")
        k, p = means.shape
        self.n_labels = k
        self.n_features = p
        if self.kind == "full":
            log_det = np.sum(np.log(np.reshape(chol, (k, -1))[:, :: p + 1]), axis=1)
            self.stacked = np.ascontiguousarray(np.concatenate(list(chol), axis=1))  # (p, k*p)
            self.offset = np.concatenate([means[j] @ chol[j] for j in range(k)])
        elif self.kind == "tied":
            log_det = np.sum(np.log(np.diagonal(chol)))
            self.chol = chol
            self.offset = np.stack([means[j] @ chol for j in range(k)])  # (k, p)
        elif self.kind == "diag":
            log_det = np.sum(np.log(chol), axis=1)
            precisions = chol ** 2
            self.const = np.sum(means ** 2 * precisions, axis=1)
            self.cross_t = (means * precisions).T
            self.precisions_t = precisions.T
        elif self.kind == "spherical":
            log_det = p * np.log(chol)
            precisions = chol ** 2
            self.const = np.sum(means ** 2, axis=1) * precisions
            self.means_t = means.T
            self.precisions = precisions
        else:
            raise _NotCompilable(f"covariance_type {self.kind!r}")
        self.log_det = log_det
        self.log_weights = np.log(np.asarray(mixture.weights_, dtype="float64"))
        self.constant = p * math.log(2 * math.pi)

    def weighted_log_prob(self, X: np.ndarray) -> np.ndarray:
        k, p = self.n_labels, self.n_features
        if self.kind == "full":
            y = (X @ self.stacked) - self.offset
            log_prob = np.sum(np.square(y).reshape(len(X), k, p), axis=2)
        elif self.kind == "tied":
            Xc = X @ self.chol
            log_prob = np.empty((len(X), k))
            for j in range(k):
                log_prob[:, j] = np.sum(np.square(Xc - self.offset[j]), axis=1)
        elif self.kind == "diag":
            log_prob = self.const - 2.0 * (X @ self.cross_t) + (X ** 2 @ self.precisions_t)
        else:
            log_prob = (self.const - 2 * (X @ self.means_t * self.precisions)
                        + np.outer(np.einsum("ij,ij->i", X, X), self.precisions))
        return (-0.5 * (self.constant + log_prob) + self.log_det) + self.log_weights

    def labels(self, X, codes):
        if len(X) <= _BLOCK_ROWS:
            return self.weighted_log_prob(X).argmax(axis=1)
        out = np.empty(len(X), dtype="int64")
        for start in range(0, len(X), _BLOCK_ROWS):
            block = X[start:start + _BLOCK_ROWS]
            out[start:start + len(block)] = self.weighted_log_prob(block).argmax(axis=1)
        return out


class _Prototypes(_Rule):
    """K-Prototypes: argmin of ``|x - numeric prototype|² + gamma · (categories that differ)``."""

    def __init__(self, estimator: Any, layout: _Layout) -> None:
        numeric = list(estimator._numeric)
        categorical = list(estimator.categorical_)
        m = len(layout.numeric)
        if numeric != list(range(m)) or categorical != list(range(m, m + len(layout.categorical))):
            raise _NotCompilable("K-Prototypes columns are not the numeric ones then the categorical ones")
        self.centroids = np.asarray(estimator._centroids_num, dtype="float64")
        cats = np.asarray(estimator._centroids_cat).astype(str)
        self.centroid_codes = np.array(
            [[spec.codes.get(str(cats[k, j]), -2) for j, spec in enumerate(layout.categorical)]
             for k in range(cats.shape[0])], dtype="int64")
        self.gamma = float(estimator.gamma_)
        self.n_labels = len(self.centroids)

    def labels(self, X, codes):
        out = np.empty(len(X), dtype="int64")
        step = 8_192
        for start in range(0, len(X), step):
            block = slice(start, start + step)
            numeric_cost = ((X[block, None, :] - self.centroids[None, :, :]) ** 2).sum(axis=2)
            mismatches = (codes[block, None, :] != self.centroid_codes[None, :, :]).sum(axis=2)
            out[block] = np.argmin(numeric_cost + self.gamma * mismatches, axis=1)
        return out


class _RFMRules(_Rule):
    """RFM: quintile of each raw value from the learned edges, then the segment-code table."""

    def __init__(self, estimator: Any) -> None:
        self.edges = [np.asarray(e, dtype="float64") for e in
                      (estimator.recency_edges_, estimator.frequency_edges_, estimator.monetary_edges_)]
        self.codes = np.asarray(estimator.segment_codes_, dtype="int64")
        self.n_labels = int(self.codes.max()) + 1

    def labels(self, X, codes):
        r, f, m = (np.searchsorted(e, X[:, j], side="left").astype(np.intp) + 1 for j, e in enumerate(self.edges))
        return self.codes[(6 - r) - 1, f - 1, m - 1]


class _CorePoints(_Rule):
    """DBSCAN ``predict``: the label of the nearest core customer when it is within ``eps``,
    else noise.  Distances are summed column by column, ``d += (x_j - c_j)²``, as the
    k-d / ball tree the estimator queries does.  A batch of more than ``max_rows`` rows goes to
    the estimator's tree (the same answer, and faster than comparing every row with every
    core customer)."""

    max_rows = 8

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        self.cores_t = np.ascontiguousarray(np.asarray(estimator.components_, dtype="float64").T)
        self.core_labels = np.asarray(estimator.core_labels_, dtype="int64")
        self.eps = estimator.eps
        labels = np.asarray(estimator.labels_)
        self.n_labels = int(labels.max()) + 1 if len(labels) else 0

    def labels(self, X, codes):
        if len(X) > self.max_rows:
            return np.asarray(self.estimator._assign(np.ascontiguousarray(X)), dtype="int64")
        nearest, distance = _nearest_row(X, self.cores_t)
        return np.where(distance <= self.eps, self.core_labels[nearest], NOISE)


class _OwnRule(_Rule):
    """DBSCAN / HDBSCAN: the estimator's own rule on the compiled matrix (see the module doc)."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        labels = np.asarray(estimator.labels_)
        self.n_labels = int(labels.max()) + 1 if len(labels) else 0

    def labels(self, X, codes):
        return np.asarray(self.estimator._assign(np.ascontiguousarray(X)), dtype="int64")


def _rule(model: SegmentationModel, layout: _Layout) -> _Rule:
    from sklearn.cluster import Birch, BisectingKMeans, KMeans, MiniBatchKMeans
    from sklearn.mixture import GaussianMixture

    from custseg.cluster import (
        DBSCANClustering, GaussianMixtureClustering, HDBSCANClustering, KPrototypesClustering,
        MeanShiftClustering, RFMSegmenter, WardClustering,
    )

    est = model.estimator
    width = layout.n_out if layout.one_hot or not layout.categorical else len(layout.numeric)
    n_in = getattr(est, "n_features_in_", None)
    if model.algorithm == "rfm" or isinstance(est, RFMSegmenter):
        if not isinstance(est, RFMSegmenter):
            raise _NotCompilable(f"algorithm rfm with a {type(est).__name__}")
        return _RFMRules(est)
    if isinstance(est, KPrototypesClustering):
        if layout.one_hot:
            raise _NotCompilable("K-Prototypes on one-hot columns")
        return _Prototypes(est, layout)
    if not layout.one_hot and layout.categorical:
        raise _NotCompilable(f"a {type(est).__name__} on text columns")
    if n_in is not None and n_in != width:
        raise _NotCompilable(f"the estimator takes {n_in} columns, the preprocessing gives {width}")
    if isinstance(est, (KMeans, MiniBatchKMeans, WardClustering)):
        return _NearestCentre(est.cluster_centers_)
    if isinstance(est, BisectingKMeans):
        return _Bisection(est)
    if isinstance(est, Birch):
        if not hasattr(est, "subcluster_labels_"):
            raise _NotCompilable("BIRCH without subcluster labels")
        return _NearestCentre(est.subcluster_centers_, est.subcluster_labels_, est._subcluster_norms)
    if isinstance(est, GaussianMixtureClustering):
        return _Mixture(est.mixture_)
    if isinstance(est, GaussianMixture):
        return _Mixture(est)
    if isinstance(est, MeanShiftClustering):
        return _NearestMode(est.cluster_centers_, None if est.cluster_all else float(est.bandwidth_))
    if (isinstance(est, DBSCANClustering) and getattr(est, "_core_index", None) is not None
            and est._core_index._fit_method in ("kd_tree", "ball_tree")):
        return _CorePoints(est)
    if isinstance(est, (DBSCANClustering, HDBSCANClustering)) and hasattr(est, "_assign"):
        return _OwnRule(est)
    raise _NotCompilable(f"no array form of a {type(est).__name__}")


# --- the compiled model ------------------------------------------------------------------------


def _lut(mapping: Mapping[int, Any], low: int, high: int, default: Any, dtype: Any) -> np.ndarray:
    """``[mapping.get(i, default(i)) for i in low..high]`` as an array (index ``i - low``)."""
    values = [mapping.get(i, default(i) if callable(default) else default) for i in range(low, high + 1)]
    return np.array(values, dtype=dtype)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)
    except (TypeError, ValueError):  # pd.NA and other values without a truth value
        return bool(pd.isna(value)) if np.ndim(value) == 0 else False


@dataclass
class CompiledModel:
    """A :class:`~custseg.model.SegmentationModel` as arrays; made by :func:`compile_model`.

    ``numeric_columns`` and ``categorical_columns`` are the model's feature columns as
    :meth:`assign_matrix` takes them; ``fallback`` is None when the model is compiled, else
    why it is not (every method then calls the model's own ``assign``).
    """

    model: SegmentationModel
    feature_columns: list[str]
    numeric_columns: list[str]
    categorical_columns: list[str]
    fallback: str | None = None
    _layout: _Layout | None = field(default=None, repr=False)
    _rule: _Rule | None = field(default=None, repr=False)
    _raw: bool = field(default=False, repr=False)  # the rule reads the raw numbers (RFM)
    _input_columns: list[str] = field(default_factory=list, repr=False)
    _order: list[int] = field(default_factory=list, repr=False)
    _positions: np.ndarray | None = field(default=None, repr=False)  # one-hot output column of each code
    _position_base: np.ndarray | None = field(default=None, repr=False)
    _centers_twice_t: np.ndarray | None = field(default=None, repr=False)
    _centers_sq: np.ndarray | None = field(default=None, repr=False)
    _label_lut: np.ndarray | None = field(default=None, repr=False)
    _label_low: int = field(default=NOISE, repr=False)
    _name_lut: np.ndarray | None = field(default=None, repr=False)
    _name_low: int = field(default=NOISE, repr=False)
    _label_list: list[int] = field(default_factory=list, repr=False)
    _name_list: list[str] = field(default_factory=list, repr=False)

    # --- entry points ----------------------------------------------------------------------

    def assign_records(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One dict per record, in order: ``customer_id, segment, segment_name, reason``
        (``reason`` None when assigned).  A record is one customer's feature values by column
        name (a JSON object); ``customer_id`` is its position when the record has none."""
        ids = [r.get("customer_id", i) for i, r in enumerate(records)]
        if self.fallback is not None:
            segment, names, reasons = self._fallback_records(records)
        elif len(records) < COLUMNWISE_MIN_RECORDS:
            read = self._read_records_one_by_one(records)
            if len(records) == 1:
                s, name, reason = self._score_one(*read)
                return [{"customer_id": ids[0], "segment": s, "segment_name": name, "reason": reason or None}]
            segment, names, reasons = self._score(*read)
        else:
            return self.assign_columns(ids, lambda column: [r.get(column, _ABSENT) for r in records])
        return _assignments(ids, segment, names, reasons)

    @property
    def record_fields(self) -> list[str]:
        """The fields of a record that :meth:`assign_records` reads (its others are ignored)."""
        specs = self._layout.categorical if self._layout is not None else []
        return list(dict.fromkeys([*self.feature_columns, *self._inputs, *(spec.column for spec in specs)]))

    def assign_columns(self, ids: Sequence[Any], values_of) -> list[dict[str, Any]]:
        """:meth:`assign_records` of records given column by column: ``values_of(field)`` is
        the list of every record's value of one of :attr:`record_fields` (:data:`ABSENT` where a
        record has none), ``ids`` their customer ids, in the same order.  A compiled model only
        (``fallback`` None); for batches of many records, where reading a column at once pays."""
        if self.fallback is not None:
            raise ModelError(f"assign_columns needs a compiled model; this one is not ({self.fallback})")
        numbers, codes, problems = self._read_columns(len(ids), values_of)
        return _assignments(ids, *self._score(numbers, codes, problems))

    def assign_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        """What ``model.assign(features)`` gives, without ``probability``: ``customer_id,
        segment, segment_name, reason`` (``""`` when assigned), one row per input row.

        A table lacking a feature column is a ModelError, as in ``assign``; a value that
        cannot be read unassigns that customer (see the module doc)."""
        missing = [c for c in self.feature_columns if c not in features.columns]
        if missing:
            raise ModelError(
                f"the data lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)} that the model "
                f"was trained on; give a table with {', '.join(self.feature_columns)}"
            )
        if self.fallback is not None:
            return self._fallback_frame(features)
        numbers, problems = self._read_numeric_frame(features)
        codes, problems = self._read_categorical_frame(features, problems)
        segment, names, reasons = self._score_blocks(numbers, codes, problems)
        from custseg.model import _column_values

        ids = _column_values(features["customer_id"]) if "customer_id" in features else np.arange(len(features))
        reason = reasons if reasons.any() else _text_column(np.zeros(len(reasons), dtype="int32"), [""], reasons)
        return pd.DataFrame({"customer_id": ids, "segment": segment,
                             "segment_name": _text_column(segment - self._name_low, self._name_lut, names),
                             "reason": reason})

    def assign_matrix(
        self,
        numbers: np.ndarray,
        categories: np.ndarray | Sequence[Sequence[Any]] | None = None,
        *,
        customer_id: np.ndarray | Sequence[Any] | None = None,
    ) -> dict[str, np.ndarray]:
        """Assign a batch given as arrays: ``numbers`` (n × ``len(numeric_columns)``, float,
        NaN = missing) in ``numeric_columns`` order, ``categories`` (n ×
        ``len(categorical_columns)``, text, None/NaN = missing) in ``categorical_columns``
        order.  Returns arrays ``customer_id`` (the row numbers when not given), ``segment``,
        ``segment_name``, ``reason`` (``""`` when assigned)."""
        numbers = np.asarray(numbers, dtype="float64")
        n = numbers.shape[0] if numbers.ndim == 2 else 0
        if numbers.ndim != 2 or numbers.shape[1] != len(self.numeric_columns):
            raise ModelError(f"numbers must have shape (n, {len(self.numeric_columns)}) for columns "
                             f"{', '.join(self.numeric_columns)}, got {numbers.shape}")
        frame_cats = None
        if self.categorical_columns:
            if categories is None:
                raise ModelError(f"categories are needed for columns {', '.join(self.categorical_columns)}")
            values = np.asarray(categories, dtype=object)
            if values.ndim == 1 and len(self.categorical_columns) == 1:
                values = values[:, None]
            if values.shape != (n, len(self.categorical_columns)):
                raise ModelError(f"categories must have shape ({n}, {len(self.categorical_columns)}) for columns "
                                 f"{', '.join(self.categorical_columns)}, got {values.shape}")
            frame_cats = pd.DataFrame(values, columns=self.categorical_columns)
        ids = np.arange(n) if customer_id is None else np.asarray(customer_id)
        if self.fallback is not None:
            frame = pd.DataFrame(numbers, columns=self.numeric_columns)
            if frame_cats is not None:
                frame = pd.concat([frame, frame_cats], axis=1)
            frame.insert(0, "customer_id", ids)
            out = self._fallback_frame(frame)
            return {c: out[c].to_numpy() for c in ("customer_id", "segment", "segment_name", "reason")}
        layout = self._layout
        problems = np.full(n, "", dtype=object)
        bad = ~np.isfinite(numbers) & ~np.isnan(numbers)
        if self._raw:
            bad |= np.isnan(numbers)
        self._note_bad_numbers(numbers, bad, problems)
        if bad.any():
            numbers = np.where(bad, 0.0, numbers)
        values = numbers if layout is None else np.asfortranarray(numbers[:, self._order])
        codes, problems = (self._read_categorical_frame(frame_cats, problems) if frame_cats is not None
                           else (np.empty((n, 0), dtype="int64"), problems))
        segment, names, reasons = self._score_blocks(values, codes, problems)
        return {"customer_id": ids, "segment": segment, "segment_name": names, "reason": reasons}

    def matrix(self, features: pd.DataFrame) -> np.ndarray:
        """The numeric matrix the model's preprocessor makes of ``features`` (its numeric
        columns, then the one-hot ones), computed with the compiled arrays; a value that cannot
        be read counts as 0 there.  Not for RFM rules (they read the raw numbers)."""
        if self.fallback is not None or self._raw:
            raise ModelError("this model is not compiled to a matrix" + (f" ({self.fallback})" if self.fallback else
                             " (RFM rules read the raw numbers)"))
        numbers, problems = self._read_numeric_frame(features)
        codes, _ = self._read_categorical_frame(features, problems)
        X = self._transform(numbers, codes)
        return X if self._layout.one_hot or not self._layout.categorical else X[:, :len(self._layout.numeric)]

    # --- reading values -----------------------------------------------------------------------

    @property
    def _inputs(self) -> list[str]:
        """Numeric columns in the order the rule / preprocessing reads them."""
        return self._input_columns

    def _note_bad_numbers(self, numbers: np.ndarray, bad: np.ndarray, problems: np.ndarray) -> None:
        """Reasons for non-finite numbers (columns in ``numeric_columns`` order)."""
        if not bad.any():
            return
        for j in range(bad.shape[1] - 1, -1, -1):  # the first bad column names the reason
            rows = np.flatnonzero(bad[:, j])
            column = self.numeric_columns[j]
            for i in rows.tolist():
                v = numbers[i, j]
                problems[i] = f"missing {column}" if np.isnan(v) else f"{column} {v} is not a finite number"

    def _read_columns(self, n: int, values_of) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Numbers (rows × numeric inputs), category codes and the problem of each of ``n``
        records given column by column (``values_of(column)``: every record's value,
        :data:`ABSENT` where it has none).

        A column of plain numbers (or of text categories) is read in one NumPy conversion; a
        column holding anything else is read value by value with the same rules and messages.
        A record's problem is the first one in the order of its numeric inputs, then its
        categorical columns (missing ones), else its last unknown category.
        """
        raw = self._raw
        specs = self._layout.categorical if self._layout is not None else []
        inputs = self._inputs
        numbers = np.empty((n, len(inputs)), dtype="float64", order="F")
        found: list[tuple[np.ndarray, Any]] = []  # (rows with a problem, message(s)), first first
        for j, column in enumerate(inputs):
            values = values_of(column)
            x = None
            if set(map(type, values)) <= _PLAIN_NUMBER_TYPES:
                try:
                    x = np.array(values, dtype="float64")
                except (TypeError, ValueError, OverflowError):
                    x = None
            if x is None or x.shape != (n,):
                x, messages = _number_column(column, values, raw)
                bad = messages != ""
                if bad.any():
                    found.append((bad, messages))
            else:
                infinite = np.isinf(x)
                if infinite.any():
                    messages = np.full(n, "", dtype=object)
                    messages[infinite] = [f"{column} {v} is not a finite number" for v in x[infinite].tolist()]
                    if raw:
                        messages[np.isnan(x)] = f"missing {column}"
                    found.append((messages != "", messages))
                    x[messages != ""] = 0.0
                elif raw:
                    missing = np.isnan(x)
                    if missing.any():
                        found.append((missing, f"missing {column}"))
                        x[missing] = 0.0
            numbers[:, j] = x
        codes = np.empty((n, len(specs)), dtype="int64")
        unknown = np.full(n, "", dtype=object)
        for j, spec in enumerate(specs):
            values = values_of(spec.column)
            if set(map(type, values)) <= {str}:
                lookup, known = spec.codes.get, spec.known
                codes[:, j] = [lookup(v, -1) for v in values]
                strange = np.array([v not in known for v in values], dtype=bool)
                if strange.any():  # the last unknown column names the reason, as assign does
                    unknown[strange] = [f"unknown {spec.column} '{v}'" for v in np.asarray(values, dtype=object)[strange]]
                continue
            column_codes, absent, strange_text = _category_column(spec, values)
            codes[:, j] = column_codes
            if absent.any():
                found.append((absent, f"missing {spec.column}"))
            named = strange_text != ""
            unknown[named] = strange_text[named]
        problems = unknown
        for rows, messages in reversed(found):  # the first problem wins
            problems[rows] = messages[rows] if isinstance(messages, np.ndarray) else messages
        return numbers, codes, problems

    def _read_records_one_by_one(self, records: Sequence[Mapping[str, Any]]
                                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_read_columns` of records value by value: the fastest way for a few
        (fewer than :data:`COLUMNWISE_MIN_RECORDS`)."""
        inputs = self._inputs
        n = len(records)
        raw = self._raw
        specs = self._layout.categorical if self._layout is not None else []
        problems = [""] * n
        rows = []
        code_rows = []
        for i, record in enumerate(records):
            get = record.get
            row = []
            problem = ""
            for column in inputs:
                v = get(column, _ABSENT)
                if type(v) is float and v - v == 0.0:  # a finite float: the common case, inline
                    row.append(v)
                    continue
                x, trouble = _number(v, column, raw)
                problem = problem or trouble
                row.append(x)
            rows.append(row)
            if specs:
                codes = []
                unknown = ""
                for spec in specs:
                    code, absent, strange = _category(spec, get(spec.column, _ABSENT))
                    codes.append(code)
                    if absent:
                        problem = problem or f"missing {spec.column}"
                    elif strange:
                        unknown = strange  # the last one, as assign does
                problem = problem or unknown
                code_rows.append(codes)
            if problem:
                problems[i] = problem
        numbers = np.array(rows, dtype="float64").reshape(n, len(inputs))
        if n > 1:
            numbers = np.asfortranarray(numbers)
        codes = (np.array(code_rows, dtype="int64").reshape(n, len(specs)) if specs
                 else np.empty((n, 0), dtype="int64"))
        return numbers, codes, np.array(problems, dtype=object)

    def _read_numeric_frame(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The numeric inputs as ``_to_float`` reads them (``astype("float64")``), column-major."""
        inputs = self._inputs
        n = len(features)
        numbers = np.empty((n, len(inputs)), dtype="float64", order="F")
        problems = np.full(n, "", dtype=object)
        for j, column in enumerate(inputs):
            series = features[column]
            dtype = series.dtype
            if isinstance(dtype, np.dtype) and dtype.kind in "fiub":
                numbers[:, j] = series.to_numpy()  # the cast astype("float64") does
                continue
            try:
                numbers[:, j] = series.astype("float64").to_numpy(dtype="float64", na_value=np.nan)
            except (TypeError, ValueError, OverflowError):
                # Only a column holding unreadable values is read value by value.
                for i, v in enumerate(series.to_numpy(dtype=object).tolist()):
                    try:
                        numbers[i, j] = float(v)
                    except (TypeError, ValueError, OverflowError):
                        if _is_missing(v):
                            numbers[i, j] = np.nan
                        else:
                            numbers[i, j] = 0.0
                            problems[i] = problems[i] or f"{column} {_quoted(v)} is not a number"
        bad = ~np.isfinite(numbers)
        if not self._raw:
            bad &= ~np.isnan(numbers)
        if bad.any():
            for j in range(len(inputs) - 1, -1, -1):  # the first column with a problem names it
                for i in np.flatnonzero(bad[:, j]).tolist():
                    if problems[i] and "is not a number" in problems[i]:
                        continue
                    v = numbers[i, j]
                    problems[i] = f"missing {inputs[j]}" if np.isnan(v) else f"{inputs[j]} {v} is not a finite number"
            numbers[bad] = 0.0
        return numbers, problems

    def _read_categorical_frame(self, features: pd.DataFrame, problems: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Category codes as ``_to_text`` + the imputer + the encoder read them; unknown ones
        get ``assign``'s reason (``astype("string")``, the last column's when several)."""
        specs = self._layout.categorical if self._layout is not None else []
        n = len(features)
        codes = np.empty((n, len(specs)), dtype="int64")
        unknown_reason = None
        for j, spec in enumerate(specs):
            series = features[spec.column]
            if isinstance(series.dtype, pd.StringDtype):
                text = True  # text already: its own str() and astype("string")
                present = series.notna().to_numpy(dtype=bool)
                if n < _DIRECT_LOOKUP_ROWS:  # the Index's own lookup pays off on large columns only
                    values = series.to_numpy(dtype=object, na_value=np.nan)
                    code = spec.index.get_indexer(values)
                else:
                    values, code = None, spec.index.get_indexer(series)
            else:
                values = series.to_numpy(dtype=object)
                present = ~pd.isna(values)
                text = pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty")
                if not text:
                    values = series.astype(str).to_numpy(dtype=object)  # _to_text: str() of each value
                code = spec.index.get_indexer(values)
            if spec.impute is not None:
                code[~present] = spec.codes.get(spec.impute, -1)
            codes[:, j] = code
            if text and spec.exact:
                # The codes are those of the known values: unknown = present without a code.
                unknown = present & (code < 0)
                shown = values if values is not None else series.to_numpy(dtype=object)
            else:
                as_string = series.astype("string")
                unknown = (as_string.notna() & ~as_string.isin(spec.known_list)).to_numpy(dtype=bool)
                shown = as_string.to_numpy(dtype=object)
            if unknown.any():
                if unknown_reason is None:
                    unknown_reason = np.full(n, "", dtype=object)
                unknown_reason[unknown] = [f"unknown {spec.column} '{v}'" for v in shown[unknown]]
        if unknown_reason is None:
            return codes, problems
        fill = (unknown_reason != "") & (problems == "")
        problems = problems.copy()
        problems[fill] = unknown_reason[fill]
        return codes, problems

    # --- scoring ----------------------------------------------------------------------------------

    def _transform(self, numbers: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The matrix the estimator was fitted on (numeric block, then one-hot columns)."""
        layout = self._layout
        # One buffer of our own, transformed in place: the same operations as the preprocessor's,
        # without a new n × columns array (and its page faults) per step.  1M × 16, log1p on 11
        # columns and standard scaling: 3.0 s with a new array per step, on a busy machine.
        if len(layout.impute):
            X = np.where(np.isnan(numbers), layout.impute, numbers)
            if not X.flags.f_contiguous:
                X = np.asfortranarray(X)
        else:
            X = np.array(numbers, dtype="float64", order="F", copy=True)
        for group in layout.groups:
            block = X[:, group.start:group.stop]
            for step in group.steps:
                if step[0] == "log1p":
                    np.log1p(block, out=block)
                elif step[0] == "yeo_johnson":
                    block[...] = _yeo_johnson(block, step[1])
                else:
                    np.subtract(block, step[1], out=block)
                    np.divide(block, step[2], out=block)
        np.subtract(X, layout.center, out=X)
        np.divide(X, layout.scale, out=X)
        if not layout.one_hot or not layout.categorical:
            return X
        # One-hot: code c of column j sets output column offset_j + c; an unknown code (-1)
        # sets none (the encoder's all-zero block).
        n = len(X)
        out = np.zeros((n, layout.n_out), dtype="float64", order="F")  # as the DataFrame's values are
        out[:, :X.shape[1]] = X
        positions = self._positions[codes + self._position_base]
        if (codes >= 0).all():
            out[np.arange(n)[:, None], positions] = 1.0
        else:
            rows, cols = np.nonzero(codes >= 0)
            out[rows, positions[rows, cols]] = 1.0
        return out

    def _score_blocks(self, numbers: np.ndarray, codes: np.ndarray, problems: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_score`, in a block of rows per core for a large batch (row by row the same
        operations, so the same answers); each block on one BLAS thread."""
        n = len(numbers)
        workers = min(os.cpu_count() or 1, n // (_PARALLEL_MIN_ROWS // 2))
        if n < _PARALLEL_MIN_ROWS or workers < 2:
            return self._score(numbers, codes, problems)
        edges = np.linspace(0, n, workers + 1).astype(int).tolist()
        blocks = list(zip(edges[:-1], edges[1:]))
        with _one_thread(_ONE_THREAD_MIN_ROWS), ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(lambda ab: self._score(numbers[ab[0]:ab[1]], codes[ab[0]:ab[1]],
                                                         problems[ab[0]:ab[1]], limit_threads=False), blocks))
        return tuple(np.concatenate(column) for column in zip(*parts))  # type: ignore[return-value]

    def _score(self, numbers: np.ndarray, codes: np.ndarray, problems: np.ndarray, *, limit_threads: bool = True
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Segment, name and reason of each row: the rule's label through ``label_map``, then
        ``assign``'s order of reasons (``problems`` first, then far, then noise)."""
        if len(numbers) == 0:
            return np.empty(0, dtype="int64"), np.empty(0, dtype=object), np.empty(0, dtype=object)
        raw, distance, reasons, flagged = self._labels(numbers, codes, problems, limit_threads=limit_threads)
        segment = self._label_lut[raw - self._label_low]
        if distance is not None:
            far = distance > self.model.outlier_distance
            if far.any():
                far &= ~flagged
                threshold = self.model.outlier_distance
                reasons[far] = [f"far from every segment (distance {d:.2f} > {threshold:.2f})" for d in distance[far]]
                flagged |= far
        noise = segment == NOISE
        if noise.any():
            noise &= ~flagged
            reasons[noise] = "in no dense region (noise)"
            flagged |= noise
        if flagged.any():
            segment = np.where(flagged, NOISE, segment)
        return segment, self._name_lut[segment - self._name_low], reasons

    def _score_one(self, numbers: np.ndarray, codes: np.ndarray, problems: np.ndarray) -> tuple[int, str, str]:
        """:meth:`_score` for one row, the last steps on Python numbers (the same rules)."""
        raw, distance, reasons, _ = self._labels(numbers, codes, problems)
        reason = reasons[0]
        segment = self._label_list[int(raw[0]) - self._label_low]
        if not reason and distance is not None and distance[0] > self.model.outlier_distance:
            reason = f"far from every segment (distance {distance[0]:.2f} > {self.model.outlier_distance:.2f})"
        if not reason and segment == NOISE:
            reason = "in no dense region (noise)"
        if reason:
            segment = NOISE
        return segment, self._name_list[segment - self._name_low], reason

    def _labels(self, numbers: np.ndarray, codes: np.ndarray, problems: np.ndarray, *, limit_threads: bool = True
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
        """The rule's raw labels, the distance to the nearest segment centre (None for the RFM
        rules), the reasons so far and which rows have one."""
        n = len(numbers)
        reasons = problems
        flagged = reasons != ""
        with _one_thread(n) if limit_threads and n >= _ONE_THREAD_MIN_ROWS else contextlib.nullcontext():
            distance = None
            if self._raw:
                X = numbers
            else:
                X = self._transform(numbers, codes)
                if self._centers_twice_t is not None:
                    distance = self._nearest_distance(X)
                    finite = np.isfinite(distance).all()  # a non-finite value makes its distance one
                else:
                    finite = np.isfinite(X).all()
                if not finite:
                    X, flagged = self._out_of_range(X, numbers, reasons, flagged)
            raw = self._rule.labels(X, codes)
        return raw, distance, reasons, flagged

    def _out_of_range(self, X: np.ndarray, numbers: np.ndarray, reasons: np.ndarray, flagged: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Unassign the rows whose transformed numbers are not finite (a transform overflowed:
        ``assign`` raises there); their values become 0 so the rule still runs."""
        m = len(self._layout.numeric)
        bad = ~np.isfinite(X[:, :m])
        for i in np.flatnonzero(bad.any(axis=1) & ~flagged).tolist():
            j = int(np.flatnonzero(bad[i])[0])
            reasons[i] = f"{self._layout.numeric[j]} {float(numbers[i, j])} is out of the range the model scores"
        return np.where(np.isfinite(X), X, 0.0), reasons != ""

    def _nearest_distance(self, X: np.ndarray) -> np.ndarray:
        """Distance to the nearest segment centre, with :func:`custseg.model._nearest`'s formula."""
        twice_t, sq = self._centers_twice_t, self._centers_sq
        if X.shape[1] != twice_t.shape[0]:
            X = X[:, :twice_t.shape[0]]
        if len(X) <= _BLOCK_ROWS:
            d2 = (X ** 2).sum(axis=1)[:, None] - X @ twice_t + sq[None, :]
            return np.sqrt(np.maximum(d2.min(axis=1), 0))
        distance = np.empty(len(X), dtype="float64")
        for start in range(0, len(X), _BLOCK_ROWS):
            block = X[start:start + _BLOCK_ROWS]
            d2 = (block ** 2).sum(axis=1)[:, None] - block @ twice_t + sq[None, :]
            np.sqrt(np.maximum(d2.min(axis=1), 0), out=distance[start:start + len(block)])
        return distance

    # --- not compiled -----------------------------------------------------------------------------

    def _fallback_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = self.model.assign(frame)
        return out[["customer_id", "segment", "segment_name", "reason"]]

    def _fallback_records(self, records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``model.assign`` on the records that have every feature; the others are unassigned."""
        n = len(records)
        segment = np.full(n, NOISE, dtype="int64")
        names = np.full(n, self.model.segment_names.get(NOISE, "Unassigned"), dtype=object)
        reasons = np.full(n, "", dtype=object)
        complete = []
        for i, record in enumerate(records):
            absent = next((c for c in self.feature_columns if c not in record), None)
            if absent is None:
                complete.append(i)
            else:
                reasons[i] = f"missing {absent}"
        if complete:
            out = self.model.assign(pd.DataFrame([records[i] for i in complete]))
            segment[complete] = out["segment"].to_numpy()
            names[complete] = out["segment_name"].to_numpy()
            reasons[complete] = out["reason"].to_numpy()
        return segment, names, reasons


def _text_column(indices: np.ndarray, dictionary: Sequence[str], values: np.ndarray) -> Any:
    """``values`` (``dictionary[indices]``, Python strings) as the text column pandas makes of
    them, built from the few distinct strings when that column is Arrow text (pandas 3): a
    million Python strings converted one by one cost 0.16 s, the dictionary's cast 0.06 s."""
    from custseg.model import _inferred_text_dtype

    dtype = _inferred_text_dtype()
    if isinstance(dtype, np.dtype) or getattr(dtype, "storage", None) != "pyarrow" or len(indices) < _TEXT_MIN_ROWS:
        return values
    import pyarrow as pa

    text = pa.DictionaryArray.from_arrays(pa.array(np.asarray(indices, dtype="int32")),
                                          pa.array([str(v) for v in dictionary], type=pa.large_string()))
    return pd.array(text.cast(pa.large_string()), dtype=dtype)


def _assignments(ids: Sequence[Any], segment: np.ndarray, names: np.ndarray, reasons: np.ndarray) -> list[dict[str, Any]]:
    return [{"customer_id": c, "segment": s, "segment_name": n, "reason": r or None}
            for c, s, n, r in zip(ids, segment.tolist(), names.tolist(), reasons.tolist())]


def _number(v: Any, column: str, raw: bool) -> tuple[float, str]:
    """One numeric input of a record as :meth:`CompiledModel._read_columns` reads it: the
    number (0.0 where it cannot be used) and its problem (``""`` if none)."""
    t = type(v)
    problem = ""
    if t is float or t is int:
        x = float(v)
    elif v is _ABSENT:
        problem, x = f"missing {column}", 0.0
    elif v is None:
        x = math.nan
    else:
        try:
            x = float(v)
        except (TypeError, ValueError, OverflowError):
            if _is_missing(v):
                x = math.nan
            else:
                problem, x = f"{column} {_quoted(v)} is not a number", 0.0
    if x != x:
        if raw:
            problem, x = problem or f"missing {column}", 0.0
    elif x == math.inf or x == -math.inf:
        problem, x = problem or f"{column} {x} is not a finite number", 0.0
    return x, problem


def _number_column(column: str, values: list[Any], raw: bool) -> tuple[np.ndarray, np.ndarray]:
    """One numeric input of many records read value by value (:func:`_number`): the numbers
    and each record's problem (``""``)."""
    out = np.empty(len(values), dtype="float64")
    messages = np.full(len(values), "", dtype=object)
    for i, v in enumerate(values):
        out[i], problem = _number(v, column, raw)
        if problem:
            messages[i] = problem
    return out, messages


def _category(spec: _Categorical, v: Any) -> tuple[int, bool, str]:
    """One categorical input of a record: its code, whether the record lacks the column, and
    the reason if the value is unknown (``""`` if not)."""
    if v is _ABSENT:
        return -1, True, ""
    if type(v) is not str:
        if _is_missing(v):
            return (spec.codes.get(spec.impute, -1) if spec.impute is not None else -1), False, ""
        v = str(v)
    return spec.codes.get(v, -1), False, ("" if v in spec.known else f"unknown {spec.column} '{v}'")


def _category_column(spec: _Categorical, values: list[Any]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """One categorical column of many records read value by value (:func:`_category`): the
    codes, which records lack the column and each record's unknown value (``""``)."""
    n = len(values)
    codes = [-1] * n
    absent = np.zeros(n, dtype=bool)
    unknown = np.full(n, "", dtype=object)
    for i, v in enumerate(values):
        codes[i], absent[i], unknown[i] = _category(spec, v)
    return codes, absent, unknown


def _quoted(value: Any) -> str:
    text = str(value)
    return f"'{text[:40]}…'" if len(text) > 40 else f"'{text}'"


def compile_model(model: SegmentationModel) -> CompiledModel:
    """Read the fitted parameters of ``model`` into arrays, once (see the module doc).

    A model this module cannot reproduce (a preprocessing step or estimator it does not
    know) gives a :class:`CompiledModel` whose ``fallback`` says why and which calls
    ``model.assign``.
    """
    categorical_columns = [c for c in model.feature_columns if c in model.categories]
    numeric_columns = [c for c in model.feature_columns if c not in model.categories]
    compiled = CompiledModel(model, list(model.feature_columns), numeric_columns, categorical_columns)
    try:
        raw = model.algorithm == "rfm"
        layout = None if raw else _layout(model)
        if layout is not None:
            names = [*layout.numeric, *(c.column for c in layout.categorical)]
            if sorted(names) != sorted(model.feature_columns):
                raise _NotCompilable(f"the preprocessing reads {names}, the model's columns are "
                                     f"{model.feature_columns}")
            if [c.column for c in layout.categorical] != categorical_columns:
                categorical_columns = [c.column for c in layout.categorical]
                numeric_columns = [c for c in model.feature_columns if c not in categorical_columns]
        else:
            from custseg.cluster import RFM_COLUMNS

            if sorted(model.feature_columns) != sorted(RFM_COLUMNS) or model.categories:
                raise _NotCompilable(f"RFM rules on columns {model.feature_columns}")
            numeric_columns = list(RFM_COLUMNS)
        compiled.numeric_columns, compiled.categorical_columns = numeric_columns, categorical_columns
        compiled._layout = layout
        compiled._raw = raw
        compiled._rule = _rule(model, layout) if layout is not None else _rule(model, _Layout(
            numeric_columns, np.empty(0), [], np.empty(0), np.empty(0), [], False, 3))
        inputs = compiled._input_columns = list(numeric_columns) if raw else list(layout.numeric)
        if layout is not None and layout.one_hot:
            positions, base = [], []
            for spec in layout.categorical:
                base.append(len(positions) + 1)
                positions.extend([layout.n_out, *range(spec.offset, spec.offset + len(spec.codes))])
            compiled._positions = np.array(positions, dtype="int64")
            compiled._position_base = np.array(base, dtype="int64")
        compiled._order = [numeric_columns.index(c) for c in inputs]  # assign_matrix → rule order
        centers = np.asarray(model.centers, dtype="float64")
        if len(centers) and not raw:
            width = len(layout.numeric) if not layout.one_hot else layout.n_out
            if centers.shape[1] != width:
                raise _NotCompilable(f"segment centres have {centers.shape[1]} columns, the matrix {width}")
            compiled._centers_twice_t = 2 * centers.T
            compiled._centers_sq = (centers ** 2).sum(axis=1)
        # estimator label → stable id; stable id → name
        n_labels = max(compiled._rule.n_labels, 1)
        label_map = {int(k): int(v) for k, v in model.label_map.items()}
        low, high = NOISE, max(n_labels - 1, max(label_map, default=0))
        compiled._label_low = low
        compiled._label_lut = _lut(label_map, low, high, lambda i: i, "int64")
        ids = [*label_map.values(), *range(high + 1), *model.segment_names, NOISE]
        compiled._name_low = min(ids)
        compiled._name_lut = _lut(model.segment_names, min(ids), max(ids), "Unassigned", object)
        compiled._label_list = compiled._label_lut.tolist()
        compiled._name_list = compiled._name_lut.tolist()
    except _NotCompilable as exc:
        compiled = CompiledModel(model, list(model.feature_columns), [c for c in model.feature_columns
                                 if c not in model.categories], [c for c in model.feature_columns
                                 if c in model.categories], fallback=str(exc))
    return compiled
