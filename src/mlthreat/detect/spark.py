"""The Spark engine: the same detectors over logs one machine cannot hold, and over a live feed.

Data flow (one Spark job per run, or per micro-batch of a stream)
------------------------------------------------------------------
1. Read: each log file is parsed by one Spark task with the local engine's
   :class:`~mlthreat.detect.readers.LogReader` (same formats, mappings, checks and quarantine);
   an event's position is ``(file index, line)``, which orders the whole input as the local
   engine reads it. Malformed lines come back to the driver, counted and quarantined.
2. Blacklight's cross-client match is a join on hash values: each distinct input (the first
   occurrence of its exact-repeat digest) is exploded into its fingerprint hashes, numbered per
   hash in log order; a query is joined with the ``max_postings`` earlier holders of each of its
   hashes; shared hashes are counted per pair. That gives every query's overlap and the
   earliest other client it matched, which is what the local store computes.
3. Per-client detectors run with ``applyInPandas`` on the events grouped by
   ``(model_id, client_id)``, co-grouped with each client's saved state: the detector classes
   are the local ones, fed one client's events in log order (Blacklight's per-client counting
   uses :meth:`~mlthreat.detect.detectors.blacklight.BlacklightDetector.account` on the
   overlaps of step 2).
4. The driver orders detections by time then detector, and passes each to the local engine's
   :func:`~mlthreat.detect.engine.admit` (allow-list, suppression windows, the per-technique
   tally), so both engines raise the same alerts and summaries.

Streaming (:func:`stream`): Structured Streaming reads new log files from a folder; each
micro-batch goes through steps 1-4 with the state the previous one left: every client's
detector state (its ``checkpoint()``, one JSON document per client and detector) and the
stored fingerprint hashes. Both are kept as Parquet under the checkpoint folder, so a
restarted stream loses nothing.

Where the engines differ: the local Blacklight store holds the ``max_fingerprints`` most recent
distinct inputs, the Spark one all of them (no eviction); they agree while a log holds at most
``max_fingerprints`` distinct inputs (100,000 by default). Per-client state is not bounded by
``max_clients`` on Spark: each client's state lives in its own group.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlthreat.detect.engine import DetectionResult

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

    from mlthreat.detect.alerts import Alert
    from mlthreat.detect.batch import EventBatch
    from mlthreat.detect.detectors.base import Detector
    from mlthreat.kb.model import KnowledgeBase

__all__ = ["SparkRun", "check_logs", "detect", "events", "get_session", "match", "resumes",
           "run", "stream"]

# a position is file index << 40 | line number: a trillion lines per file, a million files
_LINE_BITS = 40

_EVENTS = ("pos long, ts double, client_id string, model_id string, x array<float>, "
           "label long, truth string, meta string")
_OUT = "model_id string, client_id string, kind string, detector string, payload string"
_MATCH = "pos long, client_id string, digest long, fp array<long>"
_HASHES = "h long, r long, pos long, client_id string"


def get_session(master: str | None = None) -> SparkSession:
    """The active Spark session, or a new one on ``master`` (default: ``MLTHREAT_SPARK_MASTER``
    or ``local[*]``).

    Raises
    ------
    UsageError
        When PySpark is not installed (``pip install 'mlthreat[spark]'``).
    """
    from mlthreat.errors import UsageError

    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise UsageError("the Spark engine needs PySpark: pip install 'mlthreat[spark]' "
                         "(from a checkout: pip install '.[spark]')"
                         ) from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    # workers must run the interpreter mlthreat is installed in, not the first python3 on PATH
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    import warnings

    # pandas 3 works for what the engine does (tests compare every result with the local
    # engine's); PySpark 4.3 warns about it on each call
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas",
                            category=FutureWarning)
    session = (SparkSession.builder.appName("mlthreat")
            .master(master or os.environ.get("MLTHREAT_SPARK_MASTER", "local[*]"))
            .config("spark.sql.shuffle.partitions", os.environ.get(
                "MLTHREAT_SPARK_PARTITIONS", "8"))
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    return session


class SparkRun:
    """The detectors' configuration as plain data that Spark ships to its workers.

    Parameters
    ----------
    detectors : list of Detector
        Built and, if wanted, calibrated on the driver (:func:`~mlthreat.detect.engine.
        build_detectors`); their names, parameters and calibrations are what the workers use.
    """

    def __init__(self, detectors: list[Detector]) -> None:
        self.spec = [(d.name, dict(d.params), d.calibration()) for d in detectors]
        self.order = {d.name: i for i, d in enumerate(detectors)}

    def blacklight(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(parameters, calibration) of Blacklight, when it runs."""
        for name, params, cal in self.spec:
            if name == "blacklight":
                return params, cal
        return None

    def resolve(self, dim: int) -> None:
        """Fix Blacklight's scaled parameters from the input dimension (as its first batch
        would), so that every worker fingerprints alike."""
        from mlthreat.detect.detectors.blacklight import BlacklightDetector

        for i, (name, params, cal) in enumerate(self.spec):
            if name == "blacklight" and cal.get("dim") is None:
                det = BlacklightDetector(**params)
                self.spec[i] = (name, params, {"detector": name, **det._resolve(dim)})


def _build(spec: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> list[Detector]:
    from mlthreat.detect.engine import build_detectors

    params = {name: dict(p) for name, p, _ in spec}
    if "blacklight" in params:
        # the per-client half never touches the fingerprint store; keep it small
        params["blacklight"]["max_fingerprints"] = 1
    detectors = build_detectors([name for name, _, _ in spec], params)
    for det, (_, _, cal) in zip(detectors, spec, strict=True):
        det.load_calibration(cal)
    return detectors


# -- 1. reading -----------------------------------------------------------------------------

def _read_files(rows: Iterator[pd.DataFrame], mapping: Any) -> Iterator[pd.DataFrame]:
    """Worker side of :func:`events`: parse each (file index, path) with the local reader."""
    import io

    import pandas as pd

    from mlthreat.detect.readers import LogReader
    from mlthreat.errors import MlthreatError

    cols = ["pos", "ts", "client_id", "model_id", "x", "label", "truth", "meta"]
    for frame in rows:
        for index, path in zip(frame["file"].tolist(), frame["path"].tolist(), strict=True):
            quarantine = io.StringIO()
            reader = LogReader(path, mapping=mapping, quarantine=quarantine)
            try:
                for batch in reader:
                    assert batch.line is not None
                    truth = batch.truth if batch.truth is not None else [None] * len(batch)
                    yield pd.DataFrame({
                        "pos": (index << _LINE_BITS) + batch.line, "ts": batch.ts,
                        "client_id": batch.client_id, "model_id": batch.model_id,
                        "x": list(batch.x), "label": batch.label, "truth": truth,
                        "meta": None}, columns=cols)
            except MlthreatError as exc:
                yield _meta(cols, index, {"error": str(exc)})
                continue
            st = reader.stats
            yield _meta(cols, index, {"stats": {"source": st.source, "lines": st.lines,
                                                "blank": st.blank, "events": st.events,
                                                "skipped": dict(st.skipped)},
                                      "quarantine": quarantine.getvalue()})


def _meta(cols: list[str], index: int, doc: dict[str, Any]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame([{**dict.fromkeys(cols), "pos": index << _LINE_BITS,
                          "meta": json.dumps(doc)}], columns=cols)


def check_logs(paths: Iterable[str | Path]) -> None:
    """Fail fast, before Spark starts, on a log that is missing, a folder, or of an unknown
    format (LogFormatError naming it)."""
    from mlthreat.detect.errors import LogFormatError
    from mlthreat.detect.readers import detect_format

    for path in map(Path, paths):
        if not path.is_file():
            raise LogFormatError(f"{path}: " + ("a folder, not a log file" if path.is_dir()
                                                else "no such file"))
        detect_format(path)


def events(spark: SparkSession, paths: Iterable[str | Path], *, mapping: Any = None,
           quarantine: str | Path | None = None, stats: list[Any] | None = None,
           first_file: int = 0) -> DataFrame:
    """The QueryEvents of ``paths`` as a DataFrame (columns ``pos, ts, client_id, model_id,
    x, label, truth``).

    Malformed lines are appended to ``quarantine`` (JSONL) and each file's counts to ``stats``
    (:class:`~mlthreat.detect.readers.ReadStats`), on the driver.

    Raises
    ------
    LogFormatError
        For a file that cannot be read at all (missing, wrong format), naming it.
    """
    from pyspark.sql import functions as F

    from mlthreat.detect.errors import LogFormatError
    from mlthreat.detect.readers import ReadStats

    files = [str(p) for p in paths]
    check_logs(files)
    listing = spark.createDataFrame([(first_file + i, p) for i, p in enumerate(files)],
                                    "file long, path string")
    listing = listing.repartition(max(1, len(files)))
    frame = listing.mapInPandas(lambda it: _read_files(it, mapping), _EVENTS).cache()
    metas = frame.filter(F.col("meta").isNotNull()).orderBy("pos").collect()
    for row in metas:
        doc = json.loads(row["meta"])
        if "error" in doc:
            frame.unpersist()
            raise LogFormatError(doc["error"])
        if quarantine is not None and doc["quarantine"]:
            with open(quarantine, "a", encoding="utf-8") as fh:
                fh.write(doc["quarantine"])
        if stats is not None:
            st = doc["stats"]
            stats.append(ReadStats(**{**st, "skipped": Counter(st["skipped"])}))
    return frame.filter(F.col("meta").isNull()).drop("meta")


def _traffic(frame: DataFrame) -> DataFrame:
    """Leave out the queries an assessment spent measuring itself (``truth: evaluation``)."""
    from pyspark.sql import functions as F

    return frame.filter(F.col("truth").isNull() | (F.col("truth") != "evaluation"))


# -- 2. Blacklight's cross-client match -----------------------------------------------------

def _fingerprint(rows: Iterator[pd.DataFrame], cal: dict[str, Any]) -> Iterator[pd.DataFrame]:
    import numpy as np
    import pandas as pd

    from mlthreat.detect.detectors._fingerprints import digests, fingerprints

    for frame in rows:
        if not len(frame):
            continue
        x = np.stack(frame["x"].to_numpy()).astype(np.float32, copy=False)
        fp = fingerprints(x, cal["quantization"], cal["window"], cal["step"], cal["top_n"])
        yield pd.DataFrame({
            "pos": frame["pos"].to_numpy(), "client_id": frame["client_id"].to_numpy(),
            "digest": np.asarray(digests(x), dtype=np.uint64).view(np.int64),
            "fp": list(fp.view(np.int64))})


def match(frame: DataFrame, cal: dict[str, Any], max_postings: int,
          history: tuple[DataFrame, DataFrame] | None = None
          ) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Every query's overlap with the stored fingerprints, as Blacklight's store computes it.

    Parameters
    ----------
    frame : DataFrame
        Events (``pos, client_id, x``).
    cal : dict
        Blacklight's resolved calibration (quantisation, window, step, top_n,
        match_threshold).
    history : (hashes, digests), optional
        What earlier micro-batches stored: hashes ``h, r, pos, client_id`` (``r`` numbers the
        holders of ``h`` in log order) and digests ``digest``.

    Returns
    -------
    (overlaps, hashes, digests)
        ``overlaps``: ``pos, over, other, best`` per query (``over`` -1 for an exact repeat,
        else the largest count of hashes shared with one earlier distinct input; ``other`` the
        client of the earliest such input from another client sharing at least
        ``match_threshold``; ``best`` the position of the earliest input with the largest
        overlap, -1 for none);
        ``hashes`` and ``digests``: what this frame adds to the history.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    fps = frame.select("pos", "client_id", "x").mapInPandas(
        lambda it: _fingerprint(it, cal), _MATCH)
    first = F.row_number().over(Window.partitionBy("digest").orderBy("pos")) == 1
    fps = fps.withColumn("stored", first)
    old_hashes = old_digests = None
    if history is not None:
        old_hashes, old_digests = history
        seen = old_digests.select("digest", F.lit(True).alias("seen"))
        fps = (fps.join(seen, "digest", "left")
               .withColumn("stored", F.col("stored") & F.col("seen").isNull()).drop("seen"))
    fps = fps.cache()
    stored = fps.filter("stored")
    hashes = (stored.select("pos", "client_id", F.explode("fp").alias("h"))
              .filter(F.col("h") != 0)
              .withColumn("r", F.row_number().over(Window.partitionBy("h").orderBy("pos"))))
    if old_hashes is not None:
        offset = old_hashes.groupBy("h").agg(F.max("r").alias("base"))
        hashes = (hashes.join(offset, "h", "left")
                  .withColumn("r", F.col("r") + F.coalesce(F.col("base"), F.lit(0)))
                  .drop("base"))
    hashes = hashes.select("h", "r", "pos", "client_id").cache()
    holders = hashes if old_hashes is None else hashes.unionByName(old_hashes)
    a, b = hashes.alias("a"), holders.alias("b")
    pairs = a.join(b, (F.col("a.h") == F.col("b.h")) & (F.col("b.r") < F.col("a.r"))
                   & (F.col("b.r") >= F.col("a.r") - max_postings))
    counts = pairs.groupBy(F.col("a.pos").alias("pos"), F.col("a.client_id").alias("client"),
                           F.col("b.pos").alias("cand"),
                           F.col("b.client_id").alias("owner")).count()
    best = counts.groupBy("pos").agg(F.max("count").alias("best"))
    # the earliest candidate with the largest overlap: the query's cluster for membership
    first_best = (counts.join(best, "pos").filter(F.col("count") == F.col("best"))
                  .groupBy("pos").agg(F.min("cand").alias("best_id")))
    other = (counts.filter((F.col("count") >= cal["match_threshold"])
                           & (F.col("owner") != F.col("client")))
             .groupBy("pos").agg(F.min_by("owner", "cand").alias("other")))
    overlaps = (fps.select("pos", "stored").join(best, "pos", "left").join(other, "pos", "left")
                .join(first_best, "pos", "left")
                .select("pos", F.when(F.col("stored"), F.coalesce(F.col("best"), F.lit(0)))
                        .otherwise(F.lit(-1)).alias("over"), "other",
                        F.coalesce(F.col("best_id"), F.lit(-1)).alias("best")))
    return overlaps, hashes, stored.select("digest")


# -- 3. per-client detectors ----------------------------------------------------------------

def _to_batch(frame: pd.DataFrame, sources: dict[int, str]) -> EventBatch:
    import numpy as np

    from mlthreat.detect.batch import EventBatch

    truth = frame["truth"].to_numpy(dtype=object)
    return EventBatch(
        ts=frame["ts"].to_numpy(dtype=np.float64),
        client_id=frame["client_id"].to_numpy(dtype=object),
        model_id=frame["model_id"].to_numpy(dtype=object),
        x=np.stack(frame["x"].to_numpy()).astype(np.float32, copy=False),
        label=frame["label"].to_numpy(dtype=np.int64),
        truth=None if all(t is None for t in truth) else truth,
        line=(frame["pos"].to_numpy(dtype=np.int64) & ((1 << _LINE_BITS) - 1)),
        source=sources.get(int(frame["pos"].iloc[0]) >> _LINE_BITS, ""))


def _per_client(key: tuple[Any, ...], frame: pd.DataFrame, saved: pd.DataFrame,
                spec: list[tuple[str, dict[str, Any], dict[str, Any]]],
                sources: dict[int, str]) -> pd.DataFrame:
    """Worker side of step 3 for one client: restore, observe, report, checkpoint."""
    import pandas as pd

    from mlthreat.errors import MlthreatError

    model_id, client_id = key
    out: list[tuple[str, str, str]] = []
    try:
        detectors = _build(spec)
        states = dict(zip(saved["detector"].tolist(), saved["payload"].tolist(), strict=True))
        for det in detectors:
            if det.name in states:
                det.restore(json.loads(states[det.name]))
        if len(frame):
            frame = frame.sort_values("pos", kind="stable")
            batch = _to_batch(frame, sources)
            for det in detectors:
                if det.name == "blacklight":
                    found = det.account(  # type: ignore[attr-defined]
                        batch, frame["over"].astype(int).tolist(),
                        [o if isinstance(o, str) else None for o in frame["other"].tolist()],
                        frame["best"].astype(int).tolist(), frame["pos"].astype(int).tolist())
                else:
                    found = det.observe(batch)
                out += [("detection", det.name, json.dumps(asdict(d))) for d in found]
        for det in detectors:
            out += [("status", det.name, json.dumps(asdict(s))) for s in det.statuses()]
            out.append(("state", det.name, json.dumps(det.checkpoint())))
    except MlthreatError as exc:
        out = [("error", "", str(exc))]
    return pd.DataFrame([(model_id, client_id, *row) for row in out],
                        columns=["model_id", "client_id", "kind", "detector", "payload"])


_EMPTY_STATE = "model_id string, client_id string, detector string, payload string"


def detect(frame: DataFrame, job: SparkRun, *, sources: dict[int, str] | None = None,
           state: DataFrame | None = None,
           history: tuple[DataFrame, DataFrame] | None = None
           ) -> tuple[DataFrame, tuple[DataFrame, DataFrame] | None]:
    """Steps 2 and 3 on an event DataFrame: the per-client output rows (``model_id,
    client_id, kind, detector, payload`` with kind ``detection``, ``status``, ``state`` or
    ``error``) and what the frame adds to Blacklight's history (None without Blacklight)."""
    from pyspark.sql import functions as F

    spark = frame.sparkSession
    new_history = None
    bl = job.blacklight()
    if bl is not None:
        params, cal = bl
        overlaps, hashes, digests = match(frame, cal, int(params["max_postings"]), history)
        frame = frame.join(overlaps, "pos", "left")
        new_history = (hashes, digests)
    else:
        frame = (frame.withColumn("over", F.lit(0)).withColumn("best", F.lit(-1))
                 .withColumn("other", F.lit(None).cast("string")))
    if state is None:
        state = spark.createDataFrame([], _EMPTY_STATE)
    spec = job.spec
    grouped = frame.groupBy("model_id", "client_id").cogroup(
        state.groupBy("model_id", "client_id"))
    names = dict(sources or {})
    out = grouped.applyInPandas(lambda k, f, s: _per_client(k, f, s, spec, names), _OUT)
    return out, new_history


# -- 4. alerts ------------------------------------------------------------------------------

class _Driver:
    """Driver side of step 4, kept across the micro-batches of a stream."""

    def __init__(self, detectors: list[Detector], kb: KnowledgeBase, *,
                 allow_list: Iterable[str], suppression_window: float, include_inputs: bool,
                 on_alert: Callable[[Alert], object] | None, per_detector: bool) -> None:
        from mlthreat.detect.alerts import Suppressor

        self.job = SparkRun(detectors)
        self.kb = kb
        self.include_inputs = include_inputs
        self.on_alert = on_alert
        self.shared = Suppressor(suppression_window, list(allow_list))
        self.own = ({d.name: Suppressor(suppression_window, list(allow_list))
                     for d in detectors} if per_detector else {})
        self.result = DetectionResult()

    def collect(self, rows: list[Any]) -> None:
        """Turn one job's output rows into alerts (in time, then detector order) and the
        clients' latest verdicts."""
        from mlthreat.detect.detectors.base import ClientStatus, Detection
        from mlthreat.detect.engine import admit
        from mlthreat.detect.errors import DetectError

        order = self.job.order
        found, statuses = [], []
        for row in rows:
            if row["kind"] == "error":
                raise DetectError(row["payload"])
            if row["kind"] == "detection":
                found.append(Detection(**json.loads(row["payload"])))
            elif row["kind"] == "status":
                statuses.append(ClientStatus(**json.loads(row["payload"])))
        found.sort(key=lambda d: (d.last_seen, order[d.detector], d.model_id, d.client_id))
        for detection in found:
            admit(self.result, detection, self.own.get(detection.detector, self.shared),
                  self.kb, include_inputs=self.include_inputs, on_alert=self.on_alert)
        statuses.sort(key=lambda s: (order[s.detector], s.model_id, s.client_id))
        self.result.statuses = statuses

    def finish(self) -> DetectionResult:
        result = self.result
        result.suppression = {}
        for s in [self.shared, *self.own.values()]:
            for k, v in s.counts.items():
                result.suppression[k] = result.suppression.get(k, 0) + v
        result.suppression_state = self.shared.checkpoint()
        return result


def _first_dim(frame: DataFrame) -> int | None:
    from pyspark.sql import functions as F

    row = frame.select(F.size("x").alias("d")).limit(1).collect()
    return int(row[0]["d"]) if row else None


def run(paths: Iterable[str | Path], detectors: list[Detector], kb: KnowledgeBase, *,
        spark: SparkSession | None = None, mapping: Any = None,
        quarantine: str | Path | None = None, stats: list[Any] | None = None,
        allow_list: Iterable[str] = (), suppression_window: float = 3600.0,
        include_inputs: bool = False, on_alert: Callable[[Alert], object] | None = None,
        per_detector: bool = False) -> DetectionResult:
    """Run ``detectors`` over log files on Spark; the same alerts as
    :func:`~mlthreat.detect.engine.run_detectors` on the same input (see the module docstring
    for the one bound that differs).

    Raises
    ------
    LogFormatError
        For an unreadable log file.
    DetectError
        For events a detector rejects (a vector of the wrong dimension for its calibration).
    UsageError
        When PySpark is missing.
    """
    paths = list(paths)
    check_logs(paths)
    spark = spark or get_session()
    driver = _Driver(detectors, kb, allow_list=allow_list,
                     suppression_window=suppression_window, include_inputs=include_inputs,
                     on_alert=on_alert, per_detector=per_detector)
    read = events(spark, paths, mapping=mapping, quarantine=quarantine, stats=stats)
    frame = _traffic(read)
    driver.result.ignored = read.count() - frame.count()
    dim = _first_dim(frame)
    if dim is not None:
        driver.job.resolve(dim)
        files = [str(p) for p in paths]
        out, _ = detect(frame, driver.job, sources=dict(enumerate(files)))
        driver.collect(out.filter("kind != 'state'").collect())
        driver.result.events = frame.count()
    read.unpersist()
    return driver.finish()


# -- streaming ------------------------------------------------------------------------------

def _local_path(uri: str) -> str:
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme in ("file", "") else uri


_META = ("mlthreat", "mlthreat-meta.json")  # under the checkpoint: written after each batch


def resumes(checkpoint: str | Path) -> bool:
    """Whether a stream started with ``checkpoint`` resumes an earlier one: a micro-batch of
    it has completed, so its detector state (and the alerts it delivered) are carried on."""
    return Path(checkpoint).joinpath(*_META).is_file()


class _StreamState:
    """What a stream carries between micro-batches, kept as files under ``checkpoint``:
    ``meta.json`` (next file index, resolved calibration, open suppression windows),
    ``clients/`` (per-client detector state, rewritten each micro-batch) and ``hashes/``,
    ``digests/`` (Blacklight's stored fingerprints, appended)."""

    def __init__(self, spark: SparkSession, root: Path, driver: _Driver) -> None:
        self.spark, self.root, self.driver = spark, root, driver
        root.mkdir(parents=True, exist_ok=True)
        self.meta_path = root / _META[1]
        self.meta: dict[str, Any] = {"files": 0, "spec": None, "suppression": {}, "batch": -1}
        if self.meta_path.exists():
            self.meta = json.loads(self.meta_path.read_text("utf-8"))
            saved = self.meta["spec"]
            if saved is not None:
                names = [s[0] for s in saved]
                if names != [s[0] for s in driver.job.spec]:
                    from mlthreat.errors import UsageError

                    raise UsageError(f"{root.parent}: this checkpoint was made with detectors "
                                     f"{','.join(names)}; run those or use a new checkpoint")
                driver.job.spec = [(n, p, c) for n, p, c in saved]
            driver.shared.restore(self.meta["suppression"])

    def _read(self, name: str, schema: str) -> DataFrame | None:
        path = self.root / name
        if not path.exists():
            return None
        return self.spark.read.schema(schema).parquet(str(path))

    def process(self, paths: list[str], quarantine: str | Path | None,
                stats: list[Any] | None) -> None:
        from pyspark.sql import functions as F

        driver = self.driver
        first = int(self.meta["files"])
        read = events(self.spark, paths, quarantine=quarantine, stats=stats,
                      first_file=first)
        frame = _traffic(read)
        driver.result.ignored += read.count() - frame.count()
        self.meta["files"] += len(paths)
        dim = _first_dim(frame)
        if dim is not None:
            driver.job.resolve(dim)
            state = self._read("clients", _EMPTY_STATE)
            hashes = self._read("hashes", _HASHES)
            digests = self._read("digests", "digest long")
            history = (hashes, digests) if hashes is not None and digests is not None else None
            out, added = detect(frame, driver.job, state=state, history=history,
                                sources={first + i: p for i, p in enumerate(paths)})
            out = out.cache()
            driver.collect(out.filter("kind != 'state'").collect())
            driver.result.events += frame.count()
            fresh = self.root / f"clients-{self.meta['batch'] + 1}"
            (out.filter("kind = 'state'")
             .select("model_id", "client_id", "detector", F.col("payload"))
             .write.mode("overwrite").parquet(str(fresh)))
            out.unpersist()
            if added is not None:
                added[0].write.mode("append").parquet(str(self.root / "hashes"))
                added[1].write.mode("append").parquet(str(self.root / "digests"))
            import shutil

            shutil.rmtree(self.root / "clients", ignore_errors=True)
            fresh.rename(self.root / "clients")
        read.unpersist()
        self.meta["batch"] += 1
        self.meta["spec"] = driver.job.spec
        self.meta["suppression"] = driver.shared.checkpoint()
        tmp = self.meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.meta), "utf-8")
        tmp.replace(self.meta_path)


def stream(folder: str | Path, detectors: list[Detector], kb: KnowledgeBase, *,
           checkpoint: str | Path, spark: SparkSession | None = None,
           quarantine: str | Path | None = None, stats: list[Any] | None = None,
           allow_list: Iterable[str] = (), suppression_window: float = 3600.0,
           include_inputs: bool = False, on_alert: Callable[[Alert], object] | None = None,
           files_per_batch: int = 1, available_now: bool = False) -> DetectionResult:
    """Watch ``folder`` with Structured Streaming and run ``detectors`` on each new log file
    (QueryEvent JSONL), ``files_per_batch`` files per micro-batch, delivering alerts through
    ``on_alert`` as they are raised.

    State (per-client detector state, Blacklight's fingerprints, open suppression windows, and
    Spark's own record of the files already read) lives under ``checkpoint``: a stream started
    again with the same checkpoint goes on where it stopped. With ``available_now`` the stream
    reads what is in the folder and returns; otherwise it runs until interrupted (Ctrl-C
    returns the result so far).

    Raises
    ------
    LogFormatError, DetectError, UsageError
        As :func:`run`.
    """
    spark = spark or get_session()
    driver = _Driver(detectors, kb, allow_list=allow_list,
                     suppression_window=suppression_window, include_inputs=include_inputs,
                     on_alert=on_alert, per_detector=False)
    root = Path(checkpoint)
    carried = _StreamState(spark, root / _META[0], driver)
    failure: list[BaseException] = []

    def each(batch: DataFrame, batch_id: int) -> None:
        if failure:
            return
        paths = sorted({_local_path(r["path"]) for r in batch.collect()})
        if not paths:
            return
        try:
            carried.process(paths, quarantine, stats)
        except Exception as exc:  # re-raised on the caller's thread below
            failure.append(exc)
            raise

    source = (spark.readStream.format("text").option("wholetext", "true")
              .option("maxFilesPerTrigger", files_per_batch).load(str(folder))
              .selectExpr("_metadata.file_path AS path"))
    writer = source.writeStream.foreachBatch(each).option(
        "checkpointLocation", str(root / "spark"))
    writer = writer.trigger(availableNow=True) if available_now else writer.trigger(
        processingTime="2 seconds")
    query = writer.start()
    try:
        query.awaitTermination()
    except KeyboardInterrupt:
        query.stop()
    except Exception:
        if not failure:
            raise
    if failure:
        raise failure[0]
    return driver.finish()
