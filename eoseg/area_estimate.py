"""Error-adjusted class areas and accuracy from a stratified random reference sample.

Mapped areas are biased by the map's errors. Good practice (Olofsson et al. 2014, "Good
practices for estimating area and assessing accuracy of land change", Remote Sensing of
Environment 148, 42-57) estimates them from a reference sample drawn at random within
each mapped class (the strata). With ``n[i, j]`` sample points mapped ``i`` and labelled
``j``, ``n_i`` points in stratum ``i`` and stratum weights ``W_i`` (the share of the
mapped area):

- area proportions ``p[i, j] = W_i n[i, j] / n_i`` (eq. 4 with eq. 9),
- error-adjusted area of class ``j``: ``A p_.j`` and its standard error
  ``A sqrt(sum_i W_i² (n[i, j]/n_i)(1 - n[i, j]/n_i) / (n_i - 1))`` (eqs. 10-11),
- user's accuracy ``U_i = p[i, i] / p_i.`` with variance ``U_i (1 - U_i) / (n_i - 1)``,
  producer's accuracy ``P_j = p[j, j] / p_.j`` and overall accuracy ``sum_j p[j, j]``
  with the variances of Olofsson et al. 2013 / 2014 (eqs. 2-7, after Cochran 1977).

Intervals are ``estimate ± z·SE`` (z = 1.96 for 95%), not truncated, as in the paper. No
finite population correction (the strata hold far more pixels than points).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from eoseg.errors import InvalidParameterError
from eoseg.metrics import as_floats, nan_to_none, safe_ratio

Z95 = 1.96
"""Normal quantile of the 95% intervals (the value Olofsson et al. 2014 use)."""


@dataclass(frozen=True, slots=True)
class AreaEstimate:
    """Stratified estimates of class areas and accuracy (strata = mapped classes).

    Areas are in the unit of the mapped areas given (km² from `estimate_areas`).
    Per-class values are NaN where undefined (a class neither mapped nor found).

    Attributes:
        class_names: Class names in id order.
        sample_counts: ``counts[i][j]``: points mapped ``i`` and labelled ``j``.
        mapped_area: Mapped area of each class.
        proportions: Estimated area proportions ``p[i][j]`` (rows map, columns reference).
        area: Error-adjusted area of each class.
        area_se: Its standard error.
        users_accuracy: Per class, with ``users_accuracy_se``.
        producers_accuracy: Per class, with ``producers_accuracy_se``.
        overall_accuracy: With ``overall_accuracy_se``.
        z: Normal quantile of the confidence intervals.
    """

    class_names: tuple[str, ...]
    sample_counts: tuple[tuple[int, ...], ...]
    mapped_area: tuple[float, ...]
    proportions: tuple[tuple[float, ...], ...]
    area: tuple[float, ...]
    area_se: tuple[float, ...]
    users_accuracy: tuple[float, ...]
    users_accuracy_se: tuple[float, ...]
    producers_accuracy: tuple[float, ...]
    producers_accuracy_se: tuple[float, ...]
    overall_accuracy: float
    overall_accuracy_se: float
    z: float = Z95

    def ci(self, k: int) -> tuple[float, float]:
        """The confidence interval of the error-adjusted area of class ``k``."""
        half = self.z * self.area_se[k]
        return self.area[k] - half, self.area[k] + half

    def to_dict(self, unit: str = "km2") -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes ``None``); area keys carry ``unit``."""
        classes = []
        for k, name in enumerate(self.class_names):
            low, high = self.ci(k)
            classes.append(
                {
                    "id": k,
                    "name": name,
                    "sample_points": int(sum(self.sample_counts[k])),
                    f"mapped_{unit}": nan_to_none(self.mapped_area[k]),
                    f"adjusted_{unit}": nan_to_none(self.area[k]),
                    f"adjusted_{unit}_se": nan_to_none(self.area_se[k]),
                    f"adjusted_{unit}_ci95": [nan_to_none(low), nan_to_none(high)],
                    "users_accuracy": nan_to_none(self.users_accuracy[k]),
                    "users_accuracy_se": nan_to_none(self.users_accuracy_se[k]),
                    "producers_accuracy": nan_to_none(self.producers_accuracy[k]),
                    "producers_accuracy_se": nan_to_none(self.producers_accuracy_se[k]),
                }
            )
        return {
            "sample_points": int(np.sum(self.sample_counts)),
            "overall_accuracy": nan_to_none(self.overall_accuracy),
            "overall_accuracy_se": nan_to_none(self.overall_accuracy_se),
            "confidence": 0.95 if self.z == Z95 else None,
            "z": self.z,
            f"total_{unit}": float(sum(self.mapped_area)),
            "classes": classes,
            "sample_counts": [list(row) for row in self.sample_counts],
            "proportions": [[nan_to_none(v) for v in row] for row in self.proportions],
        }


def stratified_estimate(
    counts: np.ndarray,
    mapped_area: np.ndarray,
    class_names: tuple[str, ...],
    *,
    z: float = Z95,
) -> AreaEstimate:
    """Areas and accuracy from the sample counts of a stratified random sample.

    Args:
        counts: ``(q, q)`` sample counts, rows the mapped class (stratum), columns the
            reference class.
        mapped_area: ``(q,)`` mapped area of each class, any unit (pixels, m², km²).
        class_names: The ``q`` class names.
        z: Normal quantile of the intervals.

    Raises:
        InvalidParameterError: A mapped class has fewer than 2 sample points (its
            variance is undefined), or the shapes disagree.
    """
    n = np.asarray(counts, dtype=np.float64)
    area_i = np.asarray(mapped_area, dtype=np.float64)
    q = len(class_names)
    if n.shape != (q, q) or area_i.shape != (q,):
        raise InvalidParameterError(
            f"sample counts {n.shape} and mapped areas {area_i.shape} do not fit {q} classes"
        )
    n_i = n.sum(axis=1)
    _check_strata(n_i, area_i, class_names)
    total = float(area_i.sum())
    w = area_i / total
    sampled = n_i > 0
    frac = np.zeros_like(n)
    frac[sampled] = n[sampled] / n_i[sampled, None]  # n_ij / n_i.
    p = w[:, None] * frac
    dof = np.where(n_i > 1, n_i - 1, np.inf)  # unsampled strata have W_i = 0

    p_col = p.sum(axis=0)
    var_p = (w[:, None] ** 2 * frac * (1 - frac) / dof[:, None]).sum(axis=0)
    ua = safe_ratio(np.diag(p), p.sum(axis=1))
    ua_var = ua * (1 - ua) / dof
    pa = safe_ratio(np.diag(p), p_col)
    oa = float(np.trace(p))
    oa_var = float(np.nansum(w**2 * ua * (1 - ua) / dof))
    return AreaEstimate(
        class_names=tuple(class_names),
        sample_counts=tuple(tuple(int(v) for v in row) for row in np.asarray(counts)),
        mapped_area=as_floats(area_i),
        proportions=tuple(as_floats(row) for row in p),
        area=as_floats(total * p_col),
        area_se=as_floats(total * np.sqrt(var_p)),
        users_accuracy=as_floats(ua),
        users_accuracy_se=as_floats(np.sqrt(ua_var)),
        producers_accuracy=as_floats(pa),
        producers_accuracy_se=as_floats(_producers_se(n, n_i, area_i, ua, pa, dof)),
        overall_accuracy=oa,
        overall_accuracy_se=math.sqrt(oa_var),
        z=z,
    )


def _producers_se(
    n: np.ndarray,
    n_i: np.ndarray,
    area_i: np.ndarray,
    ua: np.ndarray,
    pa: np.ndarray,
    dof: np.ndarray,
) -> np.ndarray:
    """Standard error of producer's accuracy (Olofsson et al. 2014, eq. 7).

    ``N_i`` are the mapped areas (any unit: the estimator is scale-free).
    """
    q = len(n_i)
    frac = np.zeros_like(n)
    frac[n_i > 0] = n[n_i > 0] / n_i[n_i > 0, None]
    n_hat = (area_i[:, None] * frac).sum(axis=0)  # estimated reference area of each class
    out = np.full(q, np.nan)
    for j in range(q):
        if not n_hat[j] > 0:
            continue
        ua_j = 0.0 if math.isnan(ua[j]) else ua[j]
        own = area_i[j] ** 2 * (1 - pa[j]) ** 2 * ua_j * (1 - ua_j) / dof[j]
        others = np.delete(area_i**2 * frac[:, j] * (1 - frac[:, j]) / dof, j).sum()
        out[j] = math.sqrt((own + pa[j] ** 2 * others) / n_hat[j] ** 2)
    return out


def _check_strata(n_i: np.ndarray, area_i: np.ndarray, names: tuple[str, ...]) -> None:
    """Every mapped class needs two sample points or more (a variance needs n_i - 1 > 0)."""
    thin = [
        f"{names[i]} ({int(n_i[i])})" for i in range(len(names)) if area_i[i] > 0 and n_i[i] < 2
    ]
    if thin:
        raise InvalidParameterError(
            f"mapped classes {', '.join(thin)} have fewer than 2 labelled sample points; "
            "a stratified estimate needs at least 2 per mapped class: draw a sample with "
            "eoseg sample --min-per-class 50 (or more), and label every point"
        )


@dataclass(frozen=True, slots=True)
class AreaReport:
    """Error-adjusted areas (km²) of a class map, overall and per region.

    Attributes:
        estimate: Over the whole map.
        regions: Per region name; ``None`` where the sample cannot support an estimate
            (a mapped class of the region with fewer than 2 points), with the reason in
            ``skipped``.
        skipped: Why each region without an estimate has none.
        region_field: The regions layer's name field (``None`` without one).
    """

    estimate: AreaEstimate
    regions: dict[str, AreaEstimate | None]
    skipped: dict[str, str]
    region_field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; per region under ``regions`` when a layer was given."""
        doc = self.estimate.to_dict()
        if self.region_field is not None:
            doc["region_field"] = self.region_field
            doc["regions"] = {
                name: {"skipped": self.skipped[name]} if e is None else e.to_dict()
                for name, e in self.regions.items()
            }
        return doc


def reference_counts(
    map_ids: np.ndarray, ref_ids: np.ndarray, groups: np.ndarray, n_classes: int, n_groups: int
) -> np.ndarray:
    """``(n_groups, q, q)`` sample counts (rows map, columns reference) of labelled points."""
    flat = (groups.astype(np.int64) * n_classes + map_ids) * n_classes + ref_ids
    counts = np.bincount(flat, minlength=n_groups * n_classes * n_classes)
    return counts.reshape(n_groups, n_classes, n_classes)
