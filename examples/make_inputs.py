"""Write the example inputs the README's commands use, into the folder of this script.

    python examples/make_inputs.py          # from the root of a clone, after `pip install .`

Everything is made from data that ships with scikit-learn and from mlthreat's public functions,
so it needs no network and takes under half a minute. The files are replaced on every run.

- ``model.skops``: a scaler and logistic regression on scikit-learn's breast-cancer table
  (30 numeric features, labels 0 and 1), saved with skops; ``train.csv`` holds its training rows
  (the members), ``holdout.csv`` rows it never saw (non-members) and ``rows.csv`` the rows an
  attacker would query with; each CSV has a ``label`` column.
- ``benign.jsonl``: trusted traffic to a digits classifier, model ``digits-lr`` (50 clients of
  150 queries from :func:`mlthreat.detect.evaluate.benign_events` over the digits that
  ``mlthreat assess``'s demo holds out, answered by a logistic regression trained on the demo's
  member rows, ``truth: benign``): what ``detect calibrate`` and ``detect evaluate`` read.
- ``logs/day-1.jsonl``, ``logs/day-2.jsonl``: a day each of other benign clients, plus on day 2
  a client sending uniformly random synthetic queries (a model-extraction probe), a bulk
  ``batch-scorer-01`` client and one malformed line; ``live.jsonl``: a short benign log to follow.
- ``models/``: the skops model, the same model pickled (scikit-learn classes only), and
  ``unsafe.pkl``, a pickle that would call ``builtins.print`` when loaded (a harmless stand-in
  for a malicious payload; ``mlthreat scan`` never loads it, and neither should you).

``controls.csv``, ``layer.json``, ``notes.md`` and ``acme.yaml`` beside this script are written by
hand and committed: mappings with stale IDs and names for ``kb check``, and the README's
organisation extension.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
MODEL_ID = "digits-lr"


def tabular(out: Path, seed: int) -> Any:
    """The breast-cancer model and its three CSV files; returns the fitted pipeline."""
    import pandas as pd
    import skops.io as sio
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns={"target": "label"})
    train, rest = train_test_split(frame, train_size=300, stratify=frame["label"],
                                   random_state=seed)
    holdout, rows = train_test_split(rest, train_size=150, stratify=rest["label"],
                                     random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    model.fit(train.drop(columns="label").to_numpy(), train["label"].to_numpy())
    for name, part in (("train.csv", train), ("holdout.csv", holdout), ("rows.csv", rows)):
        pd.DataFrame(part).to_csv(out / name, index=False, float_format="%.6g")
    sio.dump(model, out / "model.skops")
    return model


def answered(model: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events with the model's label and class scores, as a serving log records them."""
    scores = model.predict_proba(np.asarray([e["input"] for e in events]))
    for e, s in zip(events, np.round(scores, 6).tolist(), strict=True):
        e["output"] = {"label": int(np.argmax(s)), "scores": s}
    return events


def renamed(events: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    for e in events:
        e["client_id"] = e["client_id"].replace("benign-", prefix)
    return events


def write_jsonl(path: Path, events: list[dict[str, Any]], extra: tuple[str, ...] = ()) -> None:
    with path.open("w", encoding="utf-8") as f:
        for e in events:
            f.write(json.dumps(e, separators=(",", ":")) + "\n")
        for line in extra:
            f.write(line + "\n")


def synthetic(client: str, n: int, start: float, gap: float, rng: np.random.Generator,
              dim: int, truth: str) -> list[dict[str, Any]]:
    return [{"ts": round(start + i * gap, 3), "client_id": client, "model_id": MODEL_ID,
             "input": np.round(rng.random(dim), 6).tolist(), "output": {"label": 0},
             "truth": truth} for i in range(n)]


def logs(out: Path, clients: int, seed: int) -> None:
    """benign.jsonl, logs/ and live.jsonl, answered by a logistic regression on the digits."""
    from sklearn.linear_model import LogisticRegression

    from mlthreat.assess.data import digits_demo
    from mlthreat.detect.evaluate import benign_events

    data = digits_demo(seed)
    model = LogisticRegression(max_iter=2000, random_state=seed).fit(data.x_train, data.y_train)
    x = data.x_nonmembers
    start = 1.7e9
    benign = benign_events(x, n_clients=clients, model_id=MODEL_ID, seed=seed, start=start)
    write_jsonl(out / "benign.jsonl", answered(model, benign))

    (out / "logs").mkdir(exist_ok=True)
    day = 86400.0
    quiet = 25  # benign clients a day in logs/
    day1 = renamed(benign_events(x, n_clients=quiet, model_id=MODEL_ID, seed=seed + 1,
                                 start=start + day), "web-")
    write_jsonl(out / "logs" / "day-1.jsonl", answered(model, day1))
    rng = np.random.default_rng(seed)
    day2 = renamed(benign_events(x, n_clients=quiet, model_id=MODEL_ID, seed=seed + 2,
                                 start=start + 2 * day), "web-")
    day2 += synthetic("prober-7", 300, start + 2 * day + 60, 1.0, rng, x.shape[1],
                      "attack:AML.T0024.002")
    day2 += synthetic("batch-scorer-01", 2000, start + 2 * day + 30, 0.05, rng, x.shape[1],
                      "benign")
    day2.sort(key=lambda e: e["ts"])
    write_jsonl(out / "logs" / "day-2.jsonl", answered(model, day2),
                extra=('{"ts": "yesterday", "client_id": "web-9999"',))
    live = renamed(benign_events(x, n_clients=5, queries=40, model_id=MODEL_ID,
                                 seed=seed + 3, start=start + 3 * day), "app-")
    write_jsonl(out / "live.jsonl", answered(model, live))


class _Payload:
    """Pickles as a call of ``builtins.print``: code a loader would run."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (print, ("this pickle ran code when it was loaded",))


def models(out: Path, model: Any) -> None:
    folder = out / "models"
    folder.mkdir(exist_ok=True)
    (folder / "model.skops").write_bytes((out / "model.skops").read_bytes())
    (folder / "model.pkl").write_bytes(pickle.dumps(model, protocol=4))
    (folder / "unsafe.pkl").write_bytes(pickle.dumps({"weights": [0.5, 0.25],
                                                      "hook": _Payload()}, protocol=4))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder (default: examples/)")
    parser.add_argument("--clients", type=int, default=50,
                        help="benign clients in benign.jsonl (default: 50)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from threadpoolctl import threadpool_limits

    # one BLAS thread: these fits are small, and on a busy machine more threads make them slower
    with threadpool_limits(1):
        model = tabular(args.out, args.seed)
        models(args.out, model)
        logs(args.out, args.clients, args.seed)
    shown = args.out.relative_to(Path.cwd()) if args.out.is_relative_to(Path.cwd()) else args.out
    print(f"wrote the example inputs to {shown}/: model.skops, train.csv, holdout.csv, rows.csv, "
          "benign.jsonl, logs/, live.jsonl, models/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
