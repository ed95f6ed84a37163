"""ONNX models, run with onnxruntime on the CPU.

The input shape comes from the model's single input (its first, batch, dimension may be
symbolic); the input dtype from its element type. Of the outputs, the class probabilities are
used when the model has them: a float tensor ``[n, k]``, or the sequence of ``{class: score}``
maps that skl2onnx emits by default (``ZipMap``; converting with ``options={"zipmap": False}``
gives the tensor instead; both work). A classifier with only a label output is a labels target
(one-hot rows). A model whose only output is one float per input is a regressor.

Class labels are read from the graph (the ``classlabels_*`` attributes of skl2onnx's classifier
and ZipMap nodes) when the ``onnx`` package is installed; otherwise pass ``n_classes`` or
``classes``. Loading an ONNX file parses a protobuf: no code runs. ONNX targets are black-box.

Examples
--------
>>> from mlthreat.assess.targets import load_target
>>> target = load_target("onnx:model.onnx")                     # doctest: +SKIP
>>> target = load_target("onnx:labels_only.onnx", n_classes=10)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlthreat.assess.errors import TargetError
from mlthreat.assess.target import Target
from mlthreat.assess.targets._answers import (
    check_choice,
    clip_pair,
    label_indices,
    one_hot,
    softmax,
)

__all__ = ["SCHEME", "OnnxTarget", "load"]

SCHEME = "onnx"

_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
           "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(uint8)": "uint8"}
_LABEL_ATTRS = ("classlabels_int64s", "classlabels_ints", "classlabels_strings")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _graph(path: Path) -> Any:
    """The model's graph read with the ``onnx`` package (no external data), or None when the
    package is missing or cannot read it."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        return onnx.load(str(path), load_external_data=False).graph
    except Exception:
        return None


def _graph_classes(graph: Any) -> list[Any] | None:
    """Class labels declared in ``graph`` (ZipMap first, then any classifier node), or None
    when there is no graph or it declares none."""
    if graph is None:
        return None
    nodes = sorted(graph.node, key=lambda node: node.op_type != "ZipMap")
    for node in nodes:
        for attr in node.attribute:
            if attr.name in _LABEL_ATTRS:
                if attr.strings:
                    return [s.decode() for s in attr.strings]
                if attr.ints:
                    return [int(i) for i in attr.ints]
    return None


def _producer(graph: Any, output: str) -> str | None:
    """The op type of the node of ``graph`` that writes ``output`` (None without a graph or
    when no node does)."""
    if graph is None:
        return None
    return next((node.op_type for node in graph.node if output in node.output), None)


class OnnxTarget(Target):
    """A model in an ONNX file, run by an onnxruntime ``InferenceSession`` (CPU provider).

    Parameters
    ----------
    path : path
        The ``.onnx`` file.
    n_classes : int, optional
        Needed only when the model does not reveal it (a labels-only model whose graph
        declares no class labels).
    classes : list, optional
        The class labels in score order (read from the graph when possible).
    clip_values : (low, high), optional
        Valid feature range; defaults to (0, 1).
    output : str, optional
        Name of the output to use, overriding the choice described in the module docstring.
    task : {"classification", "regression"}, optional
        Override the task inferred from the outputs (a single float column reads as a
        regressor).
    softmax : bool
        Apply a softmax to a score output that holds logits.
    threads : int
        onnxruntime intra-op threads (default 1: small models run fastest single-threaded on
        a busy machine).

    Raises
    ------
    TargetError
        Missing file, not an ONNX model, more than one input, an input shape with unknown
        feature dimensions, or no usable output.
    """

    kind = "onnx"
    access = "black-box"

    def __init__(self, path: str | Path, *, n_classes: int | None = None,
                 classes: list[Any] | None = None, clip_values: tuple[Any, Any] | None = None,
                 output: str | None = None, task: str | None = None, softmax: bool = False,
                 threads: int = 1) -> None:
        self.path = p = Path(path)
        self.description = f"onnx:{p}"
        self.model_id = p.stem
        if not p.is_file():
            raise TargetError(f"{p}: no such model file")
        self._session = self._open(p, int(threads))
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise TargetError(f"{p}: the model takes {len(inputs)} inputs "
                              f"({', '.join(i.name for i in inputs)}); mlthreat supports one")
        inp = inputs[0]
        self._input_name = inp.name
        if inp.type not in _DTYPES:
            raise TargetError(f"{p}: input {inp.name!r} is {inp.type}, not a numeric tensor")
        self.input_dtype = _DTYPES[inp.type]
        dims = list(inp.shape or [])
        if len(dims) < 2 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
            raise TargetError(f"{p}: input {inp.name!r} has shape {dims}; mlthreat needs a batch "
                              "dimension then fixed feature dimensions")
        self.input_shape = tuple(int(d) for d in dims[1:])
        self.clip_values = clip_pair(self.description, clip_values)
        self._softmax = bool(softmax)
        check_choice(self.description, "task", task, ("classification", "regression"))
        self._choose_output(p, output, task, n_classes, classes)

    def _open(self, p: Path, threads: int) -> Any:
        try:
            import onnxruntime as ort
        except ImportError:
            raise TargetError(f"{p}: onnxruntime is not installed "
                              "(pip install onnxruntime)") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise TargetError(f"{p}: not an ONNX model onnxruntime can run "
                              f"({_first_line(exc)})") from None

    def _choose_output(self, p: Path, name: str | None, task: str | None,
                       n_classes: int | None, classes: list[Any] | None) -> None:
        outputs = self._session.get_outputs()
        by_name = {o.name: o for o in outputs}
        if name is not None and name not in by_name:
            raise TargetError(f"{p}: no output named {name!r} (outputs: {', '.join(by_name)})")

        def is_map(o: Any) -> bool:
            return str(o.type).startswith("seq(map(")

        def is_float(o: Any) -> bool:
            return o.type in ("tensor(float)", "tensor(double)", "tensor(float16)")

        def width(o: Any) -> Any:
            shape = list(o.shape or [])
            return shape[1] if len(shape) == 2 else (1 if len(shape) == 1 else None)

        candidates = [by_name[name]] if name else outputs
        probs = [o for o in candidates if is_map(o) or (is_float(o) and len(o.shape or []) == 2
                                                        and width(o) != 1)]
        probs.sort(key=lambda o: "prob" not in o.name.lower())
        labels = [o for o in candidates
                  if not is_map(o) and not is_float(o) and len(o.shape or []) == 1]
        values = [o for o in candidates if is_float(o) and width(o) == 1]
        if not probs and not labels and values and task != "regression":
            # one number per input: a binary classifier when the graph ends in a sigmoid or
            # the user says classification, a regressor otherwise
            sigmoid = _producer(_graph(p), values[0].name) == "Sigmoid"
            if sigmoid or task == "classification":
                self._output = values[0].name
                self._mode = "sigmoid" if sigmoid else "logit"
                self.task, self.output_kind, self.n_classes = "classification", "scores", 2
                self.classes = list(classes) if classes is not None else None
                self.note("one output per input read as a binary classifier ("
                          + ("its graph ends in a Sigmoid)" if sigmoid else "a logit)"))
                return
        if task == "regression" or (task is None and not probs and not labels and values):
            if not values:
                raise TargetError(f"{p}: task regression, but no output is one number per input")
            self._output, self._mode = values[0].name, "regression"
            self.task, self.output_kind, self.n_classes, self.classes = \
                "regression", "scores", 1, []
            return
        self.task = "classification"
        if probs:
            out = probs[0]
            self._mode = "map" if is_map(out) else "tensor"
            self.output_kind = "scores"
            width_k = None if is_map(out) else width(out)
        elif labels:
            out = labels[0]
            self._mode, self.output_kind, width_k = "labels", "labels", None
        else:
            listing = ", ".join(f"{o.name} {o.type}" for o in outputs)
            raise TargetError(f"{p}: no output gives class scores, labels or one value per "
                              f"input (outputs: {listing})")
        self._output = out.name
        stated = {"the output": width_k if isinstance(width_k, int) else None,
                  "classes": len(classes) if classes is not None else None,
                  "n_classes": int(n_classes) if n_classes is not None else None}
        known = {v for v in stated.values() if v is not None}
        if len(known) > 1:
            said = ", ".join(f"{k} {v}" for k, v in stated.items() if v is not None)
            raise TargetError(f"{p}: the number of classes disagrees ({said})")
        graph = _graph_classes(_graph(p))
        if not known and graph:
            known = {len(graph)}
        if not known:
            raise TargetError(f"{p}: cannot tell how many classes output {out.name!r} has; "
                              "pass the n_classes (or classes) option")
        self.n_classes = known.pop()
        if classes is not None:
            self.classes = list(classes)
        elif graph and len(graph) == self.n_classes:
            self.classes = graph
        else:
            self.classes = None

    def _predict(self, x: Any) -> Any:
        import numpy as np

        try:
            result = self._session.run([self._output], {self._input_name: x})[0]
        except Exception as exc:
            raise TargetError(f"{self.description}: inference failed "
                              f"({_first_line(exc)})") from None
        where = self.description
        if self._mode == "regression":
            return np.asarray(result, dtype="float64").reshape(len(x))
        if self._mode in ("sigmoid", "logit"):
            z = np.asarray(result, dtype="float64").reshape(len(x))
            prob = z if self._mode == "sigmoid" else 1.0 / (1.0 + np.exp(-z))
            return np.column_stack([1.0 - prob, prob])
        if self._mode == "labels":
            return one_hot(label_indices(where, result, self.classes, self.n_classes),
                           self.n_classes)
        if self._mode == "map":
            keys = self.classes if self.classes else sorted(result[0]) if result else []
            try:
                scores = np.array([[row[c] for c in keys] for row in result], dtype="float64")
            except KeyError as exc:
                raise TargetError(f"{where} answered no score for class {exc.args[0]!r}") from None
            scores = scores.reshape(len(x), -1)
        else:
            scores = np.asarray(result, dtype="float64")
        return softmax(scores) if self._softmax and len(scores) else scores


def load(path: str, *, n_classes: int | None = None, classes: list[Any] | None = None,
         clip_values: tuple[Any, Any] | None = None, output: str | None = None,
         task: str | None = None, softmax: bool = False, threads: int = 1,
         **_: Any) -> OnnxTarget:
    """Load the ONNX model at ``path`` (see :class:`OnnxTarget` for the options).

    Raises
    ------
    TargetError
        Missing file, not an ONNX model, or a model mlthreat cannot read the classes or the
        input shape of.
    """
    return OnnxTarget(path, n_classes=n_classes, classes=classes, clip_values=clip_values,
                      output=output, task=task, softmax=softmax, threads=threads)
