"""AML.T0024.001 Invert AI Model: model inversion with ART's MIFace (Fredrikson et al. 2015).

MIFace climbs the gradient of the target's confidence in one class, from a starting input, to
reconstruct what the model has learnt that class looks like. It needs gradients, so the run is
white-box: ART differentiates the target's in-process estimator (or the target's own
``art_estimator()``). Gradient steps run on that local copy and are not target queries; the
only queries are the final check, one per reconstruction, asking the target what class it
sees (counted as the attack's).
"""

from __future__ import annotations

import math
import time
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

from mlthreat.assess.finding import Finding, Metric
from mlthreat.assess.techniques._art import art_clip_values
from mlthreat.assess.techniques.base import RunContext, TechniqueRun
from mlthreat.constraints import Interval, ListOf, Options, Spec

if TYPE_CHECKING:
    from mlthreat.assess.data import AssessmentData
    from mlthreat.assess.target import Target

__all__ = ["ModelInversion"]


class ModelInversion(TechniqueRun):
    """Reconstruct one input per class by model inversion (MIFace) and measure how much of the
    class it recovers.

    Each reconstruction starts from ``init`` (default: the mean of the attacker's pool, the
    least informative natural input) and follows ART's MIFace for ``max_iter`` gradient steps
    on the target's confidence in the class. Distance: the mean squared error (MSE, per
    feature) of each reconstruction to the mean of that class's pool rows, against a baseline,
    the MSE of the overall pool mean to the same class mean: a reconstruction below its
    baseline carries information about its class that the attacker did not have. For images
    (``image_shape``, or an input that is already 2-D/3-D) the structural similarity (SSIM) is
    reported the same way. ``nearest_class_mean_rate`` counts reconstructions whose nearest
    class mean is their own class's.

    Parameters
    ----------
    max_iter : int, default 100
        MIFace gradient steps per reconstruction.
    learning_rate : float, default 0.1
        MIFace step size.
    init : {"mean", "zeros"}, default "mean"
        Starting input: the pool mean, or all zeros (the original paper's blank image).
    image_shape : tuple of int or None, default None
        Shape to view a flat input as an image for SSIM (``(8, 8)`` for the digits demo).
    min_fraction : float, default 0.5
        Fraction of classes whose reconstruction must beat the baseline for success.

    References
    ----------
    .. [1] Fredrikson, M., Jha, S., and Ristenpart, T. "Model Inversion Attacks that Exploit
       Confidence Information and Basic Countermeasures." ACM CCS 2015.

    Examples
    --------
    >>> from mlthreat.assess.techniques.inversion import ModelInversion
    >>> ModelInversion(image_shape=(8, 8)).params["max_iter"]
    100
    """

    name = "inversion-miface"
    min_rows: ClassVar[dict[str, tuple[int, str]]] = {
        "pool": (2, "each reconstruction is compared with its class's mean over pool rows of "
                 "at least two classes")}
    technique = "AML.T0024.001"
    title = "Model inversion (MIFace)"
    needs_access = "white-box"
    needs_scores = True
    defaults: ClassVar[dict[str, Any]] = {"max_iter": 100, "learning_rate": 0.1, "init": "mean",
                                          "image_shape": None, "min_fraction": 0.5}
    _constraints: ClassVar[dict[str, Spec]] = {
        "max_iter": Interval(Integral, 1, None),
        "learning_rate": Interval(Real, 0, None, closed="neither"),
        "init": Options("mean", "zeros"),
        "image_shape": [None, ListOf(Interval(Integral, 1, None), lengths=(2, 3))],
        "min_fraction": Interval(Real, 0, 1),
    }

    def rule(self) -> str:
        return (f"succeeded when, for at least {self.params['min_fraction']:.0%} of the classes, "
                "the reconstruction's MSE to its class mean is below the MSE of the overall "
                "pool mean to that class mean")

    def not_applicable(self, target: Target, data: AssessmentData) -> str | None:
        reason = super().not_applicable(target, data)
        if reason:
            return reason
        if data.y_pool is None:
            return "needs labelled pool rows (--label-column) to compute class means"
        if target.art_estimator() is None and target.estimator is None:
            return "needs an in-process differentiable model; the target has none"
        return None

    def planned_queries(self, target: Target, data: AssessmentData, budget: int) -> int:
        return min(budget, target.n_classes)

    def _classifier(self, target: Target) -> Any:
        """The ART classifier with class gradients, or None."""
        import numpy as np
        from art.estimators.classification.classifier import ClassGradientsMixin

        clf = target.art_estimator()
        if clf is None:
            from art.estimators.classification.scikitlearn import SklearnClassifier

            lo, hi = (np.broadcast_to(np.asarray(v, dtype="float32"), target.input_shape)
                      for v in art_clip_values(target))
            try:
                clf = SklearnClassifier(target.estimator, clip_values=(lo, hi))
            except TypeError:
                return None
        return clf if isinstance(clf, ClassGradientsMixin) else None

    def run(self, ctx: RunContext) -> Finding:
        import numpy as np
        from art.attacks.inference.model_inversion import MIFace

        from mlthreat.assess import metrics as st

        started = time.perf_counter()
        self.validate()
        target, data = ctx.target, ctx.data
        reason = self.not_applicable(target, data)
        if reason:
            return self.finding(ctx, "not-applicable", reason, {}, started)
        clf = self._classifier(target)
        if clf is None:
            return self.finding(ctx, "not-applicable", "ART cannot compute class gradients of a "
                                f"{type(target.estimator).__name__}", {}, started)
        assert data.y_pool is not None
        x_pool = np.asarray(data.x_pool, dtype="float64")
        flat = x_pool.reshape(len(x_pool), -1)
        y_idx = target.class_index(data.y_pool)
        classes = [c for c in range(target.n_classes) if (y_idx == c).any()]
        if len(classes) < 2:
            return self.finding(ctx, "not-applicable", "needs pool rows of at least 2 classes",
                                {}, started)
        means = np.stack([flat[y_idx == c].mean(axis=0) for c in classes])
        overall = flat.mean(axis=0)
        start = overall if self.params["init"] == "mean" else np.zeros_like(overall)
        x0 = np.tile(start, (len(classes), 1)).reshape((len(classes), *target.input_shape))
        attack = MIFace(clf, max_iter=self.params["max_iter"], window_length=100,
                        threshold=0.99, learning_rate=float(self.params["learning_rate"]),
                        batch_size=len(classes), verbose=False)
        recon = attack.infer(x0.astype("float32"), np.array(classes))  # local gradients only
        with ctx.attack():
            predicted = target.predict(recon).argmax(axis=1)  # one query per reconstruction
        rec = recon.reshape(len(classes), -1).astype("float64")
        mse = ((rec - means) ** 2).mean(axis=1)
        base = ((overall - means) ** 2).mean(axis=1)
        nearest = ((rec[:, None, :] - means[None]) ** 2).mean(axis=2).argmin(axis=1)
        k = len(classes)
        better = int((mse < base).sum())
        metrics: dict[str, Metric] = {
            "mse_to_class_mean": Metric(round(float(mse.mean()), 6), "MSE", n=k,
                                        note="mean over classes of the per-feature MSE of each "
                                        "reconstruction to its class's pool mean"),
            "baseline_mse_to_class_mean": Metric(round(float(base.mean()), 6), "MSE", n=k,
                                                 note="the same for the overall pool mean"),
            "fraction_closer_than_baseline": Metric(round(better / k, 4), "fraction", n=k,
                                                    ci=st.clopper_pearson(better, k),
                                                    note=f"{better}/{k} classes"),
            "nearest_class_mean_rate": Metric(
                round(float((nearest == np.arange(k)).mean()), 4), "fraction", n=k,
                note="reconstructions whose nearest class mean is their own class's"),
            "classified_as_class_rate": Metric(
                round(float((predicted == np.array(classes)).mean()), 4), "fraction", n=k,
                note="the target's label for each reconstruction is the class inverted"),
        }
        shape = self._image_shape(target)
        if shape is not None:
            lo, hi = (np.asarray(v, dtype="float64") for v in target.clip_values)
            span = float(np.max(hi) - np.min(lo)) or 1.0
            img = [st.ssim(_gray(r, shape), _gray(m, shape), span)
                   for r, m in zip(rec, means, strict=True)]
            base_img = [st.ssim(_gray(overall, shape), _gray(m, shape), span) for m in means]
            metrics["ssim_to_class_mean"] = Metric(round(float(np.mean(img)), 4), "SSIM", n=k,
                                                   note=f"images {shape}, channels averaged")
            metrics["baseline_ssim_to_class_mean"] = Metric(round(float(np.mean(base_img)), 4),
                                                            "SSIM", n=k)
        ok = better / k >= self.params["min_fraction"]
        reason = (f"{better}/{k} reconstructions closer to their class mean than the overall "
                  f"mean (MSE {mse.mean():.4f} vs {base.mean():.4f}); {self.params['max_iter']} "
                  f"MIFace steps each from the {self.params['init']} start, on the local "
                  "model (not counted as queries)")
        curves: dict[str, Any] = {"mse_per_class": {"x": [int(c) for c in classes],
                                    "y": [round(float(v), 6) for v in mse],
                                    "baseline": [round(float(v), 6) for v in base],
                                    "x_label": "class", "y_label": "MSE to class mean"}}
        if shape is not None:  # the reconstructions themselves, for the report's card
            curves["reconstructions"] = {
                "images": [[round(float(v), 4) for v in r] for r in rec],
                "shape": list(shape), "labels": [f"class {c}" for c in classes],
                "range": [float(np.min(lo)), float(np.max(hi))]}
        return self.finding(ctx, "succeeded" if ok else "failed", reason, metrics, started,
                            curves=curves)

    def _image_shape(self, target: Target) -> tuple[int, ...] | None:
        if self.params["image_shape"] is not None:
            shape = tuple(self.params["image_shape"])
            return shape if math.prod(shape) == math.prod(target.input_shape) else None
        return tuple(target.input_shape) if len(target.input_shape) in (2, 3) else None


def _gray(v: Any, shape: tuple[int, ...]) -> Any:
    """A flat input as a 2-D image; a 3-D one is averaged over its channel axis (the first
    when it has 1 or 3 entries, as in PyTorch's (C, H, W), else the last)."""
    img = v.reshape(shape)
    if img.ndim == 2:
        return img
    return img.mean(axis=0) if shape[0] in (1, 3) else img.mean(axis=-1)
