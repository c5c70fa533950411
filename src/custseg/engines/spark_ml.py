"""Clustering on Spark MLlib, for customer tables too large for one machine.

The customer table is a Spark DataFrame, one row per customer: a ``customer_id`` column and
the feature columns (numeric, or text for categories).  Everything that reads all customers
runs on Spark; only a seeded sample of at most ``sample`` rows (default 20,000) and small
aggregates come to the driver.  What comes out is the same as the local flow's: a
:class:`custseg.model.SegmentationModel` that ``save`` writes to ``model.skops`` and that
``assign``, :func:`custseg.scoring.compile_model`, the report and the service use unchanged.

API
---
``segment_on_spark(spark_df, feature_columns, *, algorithms=("kmeans",), k_values=range(2, 9),
seeds=3, sample=20_000, random_state=0, min_share=0.02, n_clusters=None, algorithm=None)``
    -> ``(model, leaderboard, labels)``

    - ``model``: :class:`~custseg.model.SegmentationModel` of the recommended (or the asked
      for) configuration, fitted on all rows; its ``preprocessor`` is a fitted scikit-learn
      ``ColumnTransformer`` (:mod:`custseg.preprocessing`'s) and its ``estimator`` a
      scikit-learn ``KMeans`` (``kmeans``, ``bisecting_kmeans``) whose ``cluster_centers_``
      are Spark's centroids, or a :class:`custseg.cluster.GaussianMixtureClustering` (``gmm``)
      holding Spark's weights, means and covariances.
    - ``leaderboard``: pandas DataFrame with :data:`custseg.selection.LEADERBOARD_COLUMNS`, one
      row per algorithm x k (``inertia`` = Spark's training cost; ``silhouette``,
      ``davies_bouldin``, ``calinski_harabasz`` on the seeded sample; ``bic``/``aic`` of a
      mixture from Spark's log-likelihood on all rows; ``min_share`` from the segment sizes
      counted on Spark; ``stability`` NaN; ``on_sample`` False: every fit uses all rows).
    - ``labels``: Spark DataFrame ``customer_id, segment, segment_name`` (+ ``probability``
      for ``gmm``), what ``assign_on_spark(model, spark_df)`` gives.

``assign_on_spark(model, spark_df)`` -> Spark DataFrame of ``spark_df``'s ``customer_id`` plus
``segment, segment_name`` (+ ``probability`` for a mixture): the model's preprocessing and its
nearest-centre / most-probable-component rule written as Spark column expressions (the
parameters are inlined into the plan, i.e. broadcast), with ``assign``'s rules: an unknown
category or a customer farther than ``outlier_distance`` from every segment gets ``-1``.

Algorithms (the registry names of :mod:`custseg.cluster` where the algorithm is the same):
``kmeans`` (MLlib ``KMeans``, k-means||), ``bisecting_kmeans`` (MLlib ``BisectingKMeans``;
Spark only, its segments are the nearest of its leaf centres) and ``gmm`` (MLlib
``GaussianMixture``, full covariances).  Each configuration is fitted with ``seeds``
seeds derived from ``random_state`` and the lowest training cost (highest log-likelihood for
``gmm``) is kept: k-means|| with one seed can merge two well-separated segments.

Errors are one-line :class:`custseg.errors.CustsegError` naming the parameter: an unknown
algorithm (``algorithms``), a k not below the number of customers (``k_values``), a
feature column that is missing or neither numeric nor text (``feature_columns``).
"""

from __future__ import annotations

__all__ = ["SPARK_ALGORITHMS", "segment_on_spark", "assign_on_spark"]

#: The algorithms this module runs on Spark.
SPARK_ALGORITHMS = ("kmeans", "bisecting_kmeans", "gmm")
