"""The data an assessment uses: the attacker's pool, held-out rows, and known members.

:class:`AssessmentData` splits the roles the techniques need:

* ``x_pool`` / ``y_pool`` — rows the attacker has (extraction queries, shadow-model training,
  evasion candidates); ``y_pool`` is the ground truth, used only to score the attack;
* ``x_eval`` / ``y_eval`` — held-out rows the evaluation uses (fidelity, accuracy);
* ``x_members`` / ``x_nonmembers`` (with labels) — rows known to be in and out of the target's
  training set, for membership inference.

Arrays are float32 [n, *input_shape]; labels int64 [n] (float for a regressor).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlthreat.assess.errors import DataError

if TYPE_CHECKING:
    import numpy as np

    from mlthreat.assess.domain import FeatureDomain
    from mlthreat.assess.target import Target

__all__ = ["AssessmentData", "check_fits", "digits_demo", "load_data", "load_target_for",
           "read_table"]


@dataclass(frozen=True)
class AssessmentData:
    """Rows by role (see the module docstring). ``clip_values`` are the valid feature range
    (scalars or arrays [d]); ``source`` says where the rows came from; ``sha256`` hashes them."""

    x_pool: np.ndarray
    y_pool: np.ndarray | None
    x_eval: np.ndarray
    y_eval: np.ndarray | None
    clip_values: tuple[Any, Any]
    x_members: np.ndarray | None = None
    y_members: np.ndarray | None = None
    x_nonmembers: np.ndarray | None = None
    y_nonmembers: np.ndarray | None = None
    x_train: np.ndarray | None = None
    y_train: np.ndarray | None = None
    source: str = ""
    sha256: str = ""
    domain: FeatureDomain | None = None
    feature_names: tuple[str, ...] | None = None
    # how the rows were read, so a report can give the command that reads them again
    options: tuple[tuple[str, str], ...] = ()

    @property
    def n_features(self) -> int:
        return int(self.x_pool.reshape(len(self.x_pool), -1).shape[1])

    @property
    def has_membership(self) -> bool:
        return self.x_members is not None and self.x_nonmembers is not None

    def describe(self) -> dict[str, Any]:
        def n(a: Any) -> int | None:
            return None if a is None else len(a)

        return {"source": self.source, "sha256": self.sha256, "pool": n(self.x_pool),
                "eval": n(self.x_eval), "members": n(self.x_members),
                "non_members": n(self.x_nonmembers), "features": self.n_features,
                **({"domain": self.domain.describe()} if self.domain is not None else {}),
                **({"options": dict(self.options)} if self.options else {})}


def _hash(*arrays: Any) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            h.update(a.tobytes())
    return h.hexdigest()


def digits_demo(seed: int = 0) -> AssessmentData:
    """scikit-learn's handwritten digits (1,797 rows of 8x8 = 64 pixels), scaled to [0, 1]:
    900 rows as the target's training members, 450 held-out non-members (also the evaluation
    rows), the remaining 447 as the attacker's pool, stratified by digit."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from mlthreat.assess.domain import FeatureDomain

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    y = y.astype("int64")
    x_mem, x_rest, y_mem, y_rest = train_test_split(x, y, train_size=900, stratify=y,
                                                    random_state=seed)
    x_non, x_pool, y_non, y_pool = train_test_split(x_rest, y_rest, train_size=450,
                                                    stratify=y_rest, random_state=seed)
    return AssessmentData(
        x_pool=x_pool, y_pool=y_pool, x_eval=x_non, y_eval=y_non,
        clip_values=(np.float32(0.0), np.float32(1.0)),
        x_members=x_mem, y_members=y_mem, x_nonmembers=x_non, y_nonmembers=y_non,
        x_train=x_mem, y_train=y_mem,
        source="scikit-learn digits (8x8, scaled to [0, 1])", sha256=_hash(x, y),
        domain=FeatureDomain(np.zeros(64), np.ones(64), ("continuous",) * 64,
                             source="pixels in [0, 1]"),
    )


def read_table(path: str | Path, label_column: str | None,
               ) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """Read features (and labels) from CSV, NPY or Parquet, by content and suffix.

    CSV and Parquet: every numeric column but ``label_column`` is a feature. NPY: a 2-D array;
    with ``label_column`` as an integer index, that column holds the labels. Returns features
    float32 [n, d], labels [n] (or None) and the feature column names (None for NPY).

    Raises
    ------
    DataError
        For a missing file, an unknown format, non-numeric features or a missing label column.
    """
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
            if arr.ndim != 2:
                raise DataError(f"{path}: expected a 2-D array, got shape {arr.shape}")
            if label_column is None:
                with np.errstate(over="ignore"):
                    features = arr.astype("float32")
                _check_values(path, features, None, None)
                return features, None, None
            try:
                col = int(label_column)
            except ValueError:
                raise DataError(f"{path}: --label-column must be a column index for NPY "
                                "files") from None
            if not -arr.shape[1] <= col < arr.shape[1]:
                raise DataError(f"{path}: --label-column {col} does not exist (the array has "
                                f"{arr.shape[1]} columns)")
            labels = arr[:, col]
            with np.errstate(over="ignore"):
                features = np.delete(arr, col, axis=1).astype("float32")
            _check_values(path, features, labels, None)
            return features, labels, None
        import pandas as pd

        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix in (".csv", ".txt", ".tsv"):
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        else:
            raise DataError(f"{path}: unknown data format (use .csv, .tsv, .npy or .parquet)")
    except DataError:
        raise
    except ValueError as exc:  # numpy pickled-object refusal, pandas parse errors
        raise DataError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # parser-specific errors of pandas and pyarrow
        raise DataError(f"{path}: cannot read: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    labels = None
    if label_column is not None:
        if label_column not in frame.columns:
            raise DataError(f"{path}: no column {label_column!r} (columns: "
                            f"{', '.join(map(str, frame.columns[:10]))})")
        labels = frame.pop(label_column).to_numpy()
    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise DataError(f"{path}: non-numeric feature columns {', '.join(map(str, bad[:5]))}")
    if frame.isna().to_numpy().any():
        row = int(np.where(frame.isna().to_numpy().any(axis=1))[0][0])
        raise DataError(f"{path}: missing values (first at data row {row + 1})")
    names = [str(c) for c in frame.columns]
    with warnings.catch_warnings():  # a value beyond float32 becomes inf, refused below
        warnings.simplefilter("ignore", RuntimeWarning)
        features = frame.to_numpy(dtype="float32")
    _check_values(path, features, labels, names)
    return features, labels, names


def _check_values(path: Path, x: Any, labels: Any, names: list[str] | None) -> None:
    """Refuse features that are NaN or infinite (or overflow float32) and labels that are
    missing, naming the first data row (1-based, the header not counted) and column."""
    import numpy as np
    import pandas as pd

    bad = ~np.isfinite(x)
    if bad.any():
        row, col = (int(i[0]) for i in np.nonzero(bad))
        what = "missing" if np.isnan(x[row, col]) else "infinite (or beyond float32)"
        column = repr(names[col]) if names else str(col)
        raise DataError(f"{path}: {what} value at data row {row + 1}, column {column}")
    if labels is not None and len(labels):
        missing = pd.isna(np.asarray(labels, dtype=object))
        if missing.any():
            raise DataError(f"{path}: missing label (first at data row "
                            f"{int(np.nonzero(missing)[0][0]) + 1})")


def load_data(
    data: str | Path,
    *,
    label_column: str | None = None,
    members: str | Path | None = None,
    non_members: str | Path | None = None,
    feature_spec: str | Path | None = None,
    seed: int = 0,
) -> AssessmentData:
    """Build :class:`AssessmentData` from the user's files.

    ``data`` is split half attacker's pool, half evaluation rows (stratified when labels allow);
    a single row serves as both. ``members`` and ``non_members`` (same columns) enable
    membership inference. The feature domain (bounds, kinds, one-hot groups; see
    :mod:`mlthreat.assess.domain`) is inferred from all rows seen, then ``feature_spec``
    declarations override it; ``clip_values`` are its bounds, so a constant column has
    ``low == high`` and the attacks keep it fixed.

    Raises
    ------
    DataError
        For an unreadable or empty file, files whose columns disagree, only one of
        ``members``/``non_members``, or a bad feature spec.
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    from mlthreat.assess.domain import infer_domain, read_feature_spec

    x, y, names = read_table(data, label_column)
    if len(x) < 1:
        raise DataError(f"{data}: no data rows")
    if len(x) == 1:
        x_pool, x_eval, y_pool, y_eval = x, x, y, y
    else:
        stratify = y if y is not None and _can_stratify(y) else None
        parts = train_test_split(x, *([y] if y is not None else []), test_size=0.5,
                                 random_state=seed, stratify=stratify)
        x_pool, x_eval = parts[0], parts[1]
        y_pool, y_eval = (parts[2], parts[3]) if y is not None else (None, None)
    if (members is None) != (non_members is None):
        raise DataError("membership inference needs both --members and --non-members")
    extra: dict[str, Any] = {}
    seen = [x]
    if members is not None and non_members is not None:
        xm, ym, _ = read_table(members, label_column)
        xn, yn, _ = read_table(non_members, label_column)
        for name, arr in (("members", xm), ("non-members", xn)):
            if arr.shape[1] != x.shape[1]:
                raise DataError(f"{name} file has {arr.shape[1]} features, data has {x.shape[1]}")
        extra = dict(x_members=xm, y_members=ym, x_nonmembers=xn, y_nonmembers=yn)
        seen += [xm, xn]
    domain = infer_domain(np.concatenate(seen))
    if feature_spec is not None:
        domain = read_feature_spec(feature_spec, domain, names)
    given = (("--label-column", label_column), ("--members", members),
             ("--non-members", non_members), ("--feature-spec", feature_spec))
    return AssessmentData(x_pool=x_pool, y_pool=y_pool, x_eval=x_eval, y_eval=y_eval,
                          options=tuple((k, str(v)) for k, v in given if v is not None),
                          clip_values=(domain.low, domain.high), source=str(data),
                          sha256=_hash(x, y, *seen[1:]), domain=domain,
                          feature_names=tuple(names) if names else None, **extra)


def _can_stratify(y: Any) -> bool:
    import numpy as np

    _, counts = np.unique(y, return_counts=True)
    return bool(len(counts) < len(y) / 2 and counts.min() >= 2)


def _size(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def check_fits(data: AssessmentData, target: Target, *, label_column: str | None = None,
               label_option: str = "label_column") -> None:
    """Check that ``data``'s rows fit ``target``'s input (the same number of values).

    Parameters
    ----------
    data : AssessmentData
    target : Target
    label_column : str, optional
        The label column the rows were read with. When none was named and the rows have one
        value more than the model takes, the message asks whether one column is the label.
    label_option : str
        What that question tells the user to name the label with (the command line names its
        option here).

    Raises
    ------
    DataError
        ``"<source> has N features; the model takes inputs of shape S"``, and the question.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from mlthreat.assess.targets.sklearn import SklearnTarget
    >>> x = np.random.default_rng(0).uniform(size=(20, 3))
    >>> y = (x[:, 0] > 0.5).astype(int)
    >>> target = SklearnTarget(LogisticRegression().fit(x, y), clip_values=(0.0, 1.0))
    >>> rows = np.c_[x, y].astype("float32")  # the label read as a feature
    >>> data = AssessmentData(rows, None, rows, None, (0.0, 1.0), source="rows.csv")
    >>> check_fits(data, target)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mlthreat.assess.errors.DataError: rows.csv has 4 features; ... name it with label_column
    """
    shape = tuple(target.input_shape)
    if shape == (data.n_features,) or _size(shape) == data.n_features:
        return
    hint = (f"; is one column the label? name it with {label_option}"
            if label_column is None and data.n_features == _size(shape) + 1 else "")
    raise DataError(f"{data.source or 'the data'} has {data.n_features} features; the model "
                    f"takes inputs of shape {shape}{hint}")


def load_target_for(spec: str, data: AssessmentData, *, label_column: str | None = None,
                    label_option: str = "label_column", check: bool = True,
                    **options: Any) -> Target:
    """Load the target ``spec`` names (:func:`mlthreat.assess.load_target`) to be attacked
    with ``data``, and check that the rows fit it (:func:`check_fits`; ``check=False`` skips
    that, for a reference model that is only asked for labels).

    What the target cannot say and the data can is taken from the data unless ``options``
    give it: ``n_features`` (the rows' width) and ``clip_values`` (the data's feature bounds).
    ``n_classes`` is the model's own (or the one given, for an endpoint that cannot say).
    Options given as None count as not given.

    Raises
    ------
    TargetError
        For a model that cannot be loaded.
    DataError
        For rows that do not fit the model's input.
    """
    from mlthreat.assess.targets import load_target

    given = {k: v for k, v in options.items() if v is not None}
    given.setdefault("n_features", data.n_features)
    given.setdefault("clip_values", data.clip_values)
    target = load_target(spec, **given)
    if check:
        check_fits(data, target, label_column=label_column, label_option=label_option)
    return target
