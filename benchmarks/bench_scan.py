"""``mlthreat scan`` throughput on real model files, against ``modelscan`` alone, and recall on
the bypass corpus, for our analysers and for each underlying scanner alone (issue: scan).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_scan.py [--workdir DIR] [--json FILE]

One run builds two corpora in a temporary folder (or ``--workdir``):

benign
    Real models made here: scikit-learn (pickle and joblib: RandomForest on digits, MLP,
    LogisticRegression), PyTorch (``torch.save`` of a state_dict, of a whole model, and in the
    legacy format), NumPy ``.npy``/``.npz`` (about 100 MB of float arrays), skops, ONNX
    (skl2onnx), safetensors (written by hand from NumPy), a Keras HDF5 file (h5py with a
    ``model_config``: Keras itself is not installed, so no ``.keras`` is *saved by Keras*) and
    a GGUF header with a ChatML template, and a Hugging Face style folder (``hf_chat_model/``:
    ``tokenizer_config.json`` and ``chat_template.jinja`` with a ChatML template that renders
    tools, ``config.json``, ``generation_config.json``, a README, safetensors weights, a
    training YAML naming a built-in template, and a TensorFlow SavedModel protobuf with its
    ``keras_metadata.pb``, both written by the test builders' protobuf encoder). A few hundred
    MB in all.
malicious
    Every attack and bypass the test builders (``tests/scan/pickle_builders.py``,
    ``tests/scan/format_builders.py``) make, one file each, named with its usual extension.
    The encrypted zip member is expected to be ``medium`` ("cannot be scanned"), not detected.

Throughput: each mode scans the benign folder in a fresh process (so peak RSS, the
process's ``VmHWM``, is that mode's own): (a) ``Scanner(engines=())``, our analysers
only; (b) the same without SHA-256 hashing; (c) ``Scanner()``, ours plus fickling, picklescan
and modelscan; (d) ``modelscan`` alone, ``ModelScan().scan(folder)`` (it picks files by
extension: the bytes it actually scanned are reported). Corpus files were just written, so
they are in the page cache for every mode.

Per format: recall of each column below, by the format our sniffer gives each malicious
file, and false positives as the benign files (top-level, members counted with
their file) with a finding at ``high`` or ``critical``, by format.

Recall: "detected" means at least one finding at ``high`` or ``critical``. Under our mapping
(see ``mlthreat.scan.engines``) fickling's ``LIKELY_UNSAFE``/``SUSPICIOUS`` and picklescan's
``suspicious`` are ``low``, so a file those two only call suspicious counts as missed; each
cell shows the most severe finding. Columns: ours (``Scanner(engines=())``); fickling,
picklescan and modelscan each alone through ``run_engines`` (format from our sniffer, as the
combined scan uses them: modelscan is shown the file under a name matching its real format);
modelscan native (``ModelScan().scan(path)`` on the file as named, choosing by extension);
and the combined default ``Scanner()``. ``n/s``: the scanner does not read that format (or,
for modelscan native, that extension); ``error``: it tried and failed, with no finding; ``-``:
read, nothing found.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "scan"))

MODES = ("ours", "ours-nohash", "default", "modelscan")
SCANNERS = ("ours", "fickling", "picklescan", "modelscan", "modelscan-native", "combined")
DETECTED = ("critical", "high")
# Malicious files whose expected result is below high (not counted as a miss).
EXPECTED_BELOW = {"encrypted_member.zip": "medium, \"cannot be scanned\""}
_RANK = ("critical", "high", "medium", "low", "info")


class Evil:
    """Pickles as a call to ``os.system``; only ever pickled, never loaded."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned",))


# --- corpus ----------------------------------------------------------------------------------

def _small_cnn() -> Any:
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def build_benign(folder: Path) -> None:
    import pickle

    import h5py
    import joblib
    import numpy as np
    import torch
    import torch.nn as nn
    from format_builders import (
        CHATML,
        gguf_bytes,
        keras_h5,
        keras_sequential,
        safetensors_bytes,
        skops_model,
    )
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x, y = load_digits(return_X_y=True)
    rf = RandomForestClassifier(n_estimators=300, random_state=0).fit(x, y)
    rf_small = RandomForestClassifier(n_estimators=20, max_depth=8, random_state=0).fit(x, y)
    lr = LogisticRegression(max_iter=2000).fit(x, y)
    mlp = MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=30, random_state=0).fit(x, y)
    # scikit-learn: pickle (protocol 5 and 2) and joblib
    (folder / "rf_digits.pkl").write_bytes(pickle.dumps(rf, protocol=5))
    (folder / "lr_digits.pkl").write_bytes(pickle.dumps(lr, protocol=2))
    (folder / "mlp_digits.pkl").write_bytes(pickle.dumps(mlp, protocol=4))
    joblib.dump(rf, folder / "rf_digits.joblib")
    joblib.dump(mlp, folder / "mlp_digits.joblib")
    joblib.dump(lr, folder / "lr_digits.joblib")
    # skops and ONNX
    skops_model(folder, "lr_iris.skops")
    import skops.io as sio

    sio.dump(rf_small, folder / "rf_small.skops")
    (folder / "rf_digits.onnx").write_bytes(
        to_onnx(rf, x[:1].astype(np.float32), target_opset=17).SerializeToString())
    (folder / "mlp_digits.onnx").write_bytes(
        to_onnx(mlp, x[:1].astype(np.float32), target_opset=17).SerializeToString())
    # PyTorch
    torch.manual_seed(0)
    cnn = _small_cnn()
    torch.save(cnn.state_dict(), folder / "cnn_state_dict.pt")
    torch.save(cnn, folder / "cnn_whole_model.pt")
    torch.save(cnn.state_dict(), folder / "cnn_legacy.pth", _use_new_zipfile_serialization=False)
    big = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 2048))
    torch.save(big.state_dict(), folder / "mlp_big_state_dict.bin")  # HF-style name
    # NumPy: ~100 MB
    np.save(folder / "embeddings.npy", rng.standard_normal((12_500, 1000), dtype=np.float32))
    np.savez(folder / "weights.npz", **{f"layer{i}": rng.standard_normal((2500, 1000),
                                                                          dtype=np.float32)
                                        for i in range(4)})
    np.savez_compressed(folder / "small_compressed.npz", a=np.arange(100_000.0),
                        b=np.zeros((300, 300), np.float32))
    np.save(folder / "labels.npy", np.arange(50_000, dtype=np.int64))
    # safetensors by hand (~32 MB)
    (folder / "model.safetensors").write_bytes(safetensors_bytes(
        {f"h.{i}.weight": rng.standard_normal((2048, 1024), dtype=np.float32) for i in range(4)},
        metadata={"format": "pt"}))
    # Keras HDF5 (h5py: a Keras 2 Sequential config, no Lambda, plus 16 MB of weights)
    h5 = keras_h5(folder, keras_sequential(with_lambda=False), name="keras_dense.h5")
    with h5py.File(h5, "a") as f:
        f.create_dataset("model_weights/dense_big/kernel",
                         data=rng.standard_normal((4096, 1024), dtype=np.float32))
    # GGUF header with the ChatML template
    (folder / "chatml.gguf").write_bytes(gguf_bytes(CHATML))
    build_hf_folder(folder / "hf_chat_model", rng)


def build_hf_folder(hf: Path, rng: Any) -> None:
    """A Hugging Face style chat model folder with a benign SavedModel export."""
    import numpy as np
    from format_builders import (
        CHATML_TOOLS,
        const,
        function,
        hf_model_folder,
        keras_metadata,
        node,
        saved_model,
        saver_nodes,
        write,
    )

    hf_model_folder(hf, CHATML_TOOLS, arrays={
        f"model.layers.{i}.mlp.up_proj.weight": rng.standard_normal((1024, 1024),
                                                                    dtype=np.float32)
        for i in range(2)})
    write(hf, "tokenizer_config.json", json.dumps({
        "add_bos_token": False, "add_prefix_space": False, "bos_token": None,
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": CHATML_TOOLS,
        "clean_up_tokenization_spaces": False, "errors": "replace",
        "model_max_length": 32768, "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
        "added_tokens_decoder": {str(151643 + i): {"content": tok, "lstrip": False,
                                                   "normalized": False, "rstrip": False,
                                                   "single_word": False, "special": True}
                                 for i, tok in enumerate(("<|endoftext|>", "<|im_start|>",
                                                          "<|im_end|>"))},
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]}, indent=2))
    write(hf, "chat_template.jinja", CHATML_TOOLS)
    write(hf, "config.json", json.dumps({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 1024,
        "intermediate_size": 1024, "num_hidden_layers": 2, "num_attention_heads": 16,
        "vocab_size": 151936, "torch_dtype": "float32", "tie_word_embeddings": True,
        "eos_token_id": 151645, "bos_token_id": 151643}, indent=2))
    write(hf, "generation_config.json", json.dumps({
        "do_sample": True, "eos_token_id": [151645, 151643], "temperature": 0.7,
        "top_p": 0.8, "repetition_penalty": 1.05}, indent=2))
    write(hf, "README.md", "---\nlicense: apache-2.0\npipeline_tag: text-generation\n---\n"
          "# hf_chat_model\n\nA small chat model. The chat template (ChatML) is in "
          "`tokenizer_config.json`; apply it with `tokenizer.apply_chat_template(messages, "
          "tools=tools, add_generation_prompt=True)`. Tool calls come back between "
          "`<tool_call>` tags, e.g. `{{ tool_call.arguments | tojson }}`.\n")
    write(hf, "finetune.yaml", "base_model: ./hf_chat_model\nchat_template: chatml\n"
          "datasets:\n  - path: data/chat.jsonl\n    type: chat_template\n"
          "sequence_len: 4096\nmicro_batch_size: 2\nlearning_rate: 0.0002\n")
    graph = [*saver_nodes(), *(const(f"dense_{i}/kernel", 2 << 20) for i in range(4)),
             node("dense_1/BiasAdd", "BiasAdd"), node("softmax", "Softmax")]
    library = (function("__inference_call_7", [node("mul", "Mul"), node("add", "AddV2")]),
               function("__inference_serving_default_42",
                        [node("call", "StatefulPartitionedCall")]))
    write(hf, "saved_model/saved_model.pb", saved_model(graph, library, graphs=2))
    write(hf, "saved_model/keras_metadata.pb", keras_metadata(with_lambda=False))
    write(hf, "saved_model/variables/variables.index", rng.bytes(256))


def build_malicious(folder: Path) -> dict[str, str]:
    """Write the attack files; returns file name -> what it is."""
    import marshal
    import pickle

    import joblib
    import numpy as np
    import pickle_builders as pb
    import torch
    from format_builders import (
        MALICIOUS,
        SSTI,
        TOOL_SSTI,
        encrypted_zip,
        function,
        gguf_bytes,
        keras3_functional,
        keras_h5,
        keras_sequential,
        keras_zip,
        node,
        onnx_model,
        saved_model,
        saver_nodes,
        serving_yaml,
        seven_zip,
        skops_edit,
        skops_model,
        text,
        tokenizer_config,
    )

    folder.mkdir(parents=True, exist_ok=True)
    described: dict[str, str] = {}

    def put(name: str, data: bytes, what: str) -> None:
        (folder / name).write_bytes(data)
        described[name] = what

    system0 = pb.call_p0("os", "system", "echo pwned")
    put("os_system_p0.pkl", system0, "os.system via GLOBAL (protocol 0)")
    put("os_system_p4.pkl", pb.call_p4("os", "system", "echo pwned"),
        "os.system via STACK_GLOBAL (protocol 4)")
    put("eval.pkl", pb.call_p0("builtins", "eval", "__import__('os').system('id')"),
        "builtins.eval")
    put("memo_confusion.pkl", pb.memo_confusion(),
        "memo confusion: BINPUT then MEMOIZE, a naive reader sees builtins.set")
    put("nested_loads.pkl", pb.nested_loads(system0), "pickle.loads of a nested os.system pickle")
    put("importlib_getattr.pkl", pb.import_module_getattr("os", "system", "echo pwned"),
        "getattr(importlib.import_module('os'), 'system')")
    code = marshal.dumps(compile("print('pwned')", "<payload>", "exec"))  # never executed
    put("marshal_loads.pkl", pb.marshal_function(code),
        "types.FunctionType(marshal.loads(code))")
    put("dotted_name.pkl", pb.call_p4("sklearn.base", "os.system", "x"),
        "STACK_GLOBAL sklearn.base / 'os.system' (attribute walk)")
    put("hidden_second_pickle.pkl", pickle.dumps([1, 2], protocol=4)
        + pb.call_p4("os", "system", "x"), "benign pickle, then a second os.system pickle")
    unresolved = (pb.proto(4) + pb.ustr("os") + pb.binbytes(b"system") + pb.STACK_GLOBAL
                  + pb.ustr("x") + pb.TUPLE1 + pb.REDUCE + pb.STOP)
    put("unresolved_stack_global.pkl", unresolved,
        "STACK_GLOBAL whose name is bytes, not a string")
    # PyTorch
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2, 2)}, buf)
    torch_zip = buf.getvalue()
    evil_zip = pb.replace_member(torch_zip, "/data.pkl", pb.call_p0("os", "system", "echo pwnd"))
    put("torch_payload.pt", evil_zip, "PyTorch zip, data.pkl calls os.system")
    put("torch_bad_crc.pt", pb.corrupt_stored(evil_zip, b"echo pwnd", b"echo PWND"),
        "PyTorch zip, os.system data.pkl with a stale CRC-32")
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("archive/data.pkl", system0)
        z.writestr("archive/version", b"3\n")
    put("pytorch_model.bin", zbuf.getvalue(), "ZIP named .bin (PyTorch zip), os.system")
    put("torch_legacy.pt", pb.legacy_torch(system0, b"\x08" + b"\xff" * 100),
        "legacy torch.save layout, object pickle calls os.system")
    # joblib / NumPy
    joblib.dump({"a": np.arange(4.0), "obj": np.array([Evil()], dtype=object)},
                folder / "object_array.joblib")
    described["object_array.joblib"] = "joblib, object array holding an os.system reducer"
    put("object_payload.npy", pb.npy_with_pickle(pb.call_p4("os", "system", "echo pwned")),
        ".npy of dtype object whose data pickle calls os.system")
    nbuf = io.BytesIO()
    with zipfile.ZipFile(nbuf, "w") as z:
        z.writestr("ok.npy", b"")
        z.writestr("evil.npy", pb.npy_with_pickle(system0))
    put("member_payload.npz", nbuf.getvalue(), ".npz whose member is an object .npy payload")
    # Keras
    keras_h5(folder, keras_sequential(), name="keras_lambda.h5")
    described["keras_lambda.h5"] = "Keras HDF5, Lambda layer (marshalled code)"
    keras_zip(folder, keras3_functional(), name="keras3_nested_lambda.keras")
    described["keras3_nested_lambda.keras"] = "Keras 3 zip, Lambda nested in a Sequential"
    keras_h5(folder, keras_sequential(with_lambda=False, custom_module="os"),
             name="keras_custom_os.h5")
    described["keras_custom_os.h5"] = "Keras HDF5, custom layer from module os"
    # ONNX, GGUF, skops
    onnx_model(folder, name="external_escape.onnx", external=("../../etc/passwd",))
    described["external_escape.onnx"] = "ONNX external data at ../../etc/passwd"
    onnx_model(folder, name="subgraph_escape.onnx", in_subgraph="/etc/shadow")
    described["subgraph_escape.onnx"] = "ONNX If-branch constant with external data /etc/shadow"
    put("ssti.gguf", gguf_bytes(SSTI), "GGUF chat template SSTI (cycler.__init__.__globals__)")

    def edit(schema: dict[str, Any]) -> dict[str, Any]:
        schema["content"]["content"]["pwn"] = {
            "__class__": "system", "__module__": "os", "__loader__": "FunctionNode",
            "__id__": 1}
        return schema

    with tempfile.TemporaryDirectory() as tmp:
        src = skops_model(Path(tmp))
        skops_edit(src, folder / "untrusted_type.skops", edit)
    described["untrusted_type.skops"] = "skops schema with a FunctionNode os.system"
    # chat templates outside GGUF
    put("tokenizer_config.json", tokenizer_config(SSTI).encode(),
        "tokenizer_config.json, chat_template SSTI (cycler.__init__.__globals__)")
    put("chat_template.json", json.dumps({"chat_template": SSTI}).encode(),
        "chat_template.json, SSTI")
    put("chat_template.jinja", (TOOL_SSTI + "\n").encode(),
        ".jinja template, joiner.__init__.__globals__.os.system")
    put("serve.yaml", serving_yaml("{{ self.__init__.__globals__.__builtins__ }}").encode(),
        "YAML serving config, serving.chat_template reaching __builtins__")
    # TensorFlow SavedModel protobufs
    put("pyfunc_graph_saved_model.pb",
        saved_model([*saver_nodes(), node("py", "PyFunc", token=text(2, "pyfunc_0"))]),
        "SavedModel, PyFunc node in the graph")
    put("pyfunc_library_saved_model.pb", saved_model(saver_nodes(), (function(
        "__inference_f_12", [node("id", "Identity"), node("eager", "EagerPyFunc")],
        signature_last=True),)), "SavedModel, EagerPyFunc in a function of the library")
    # pickle framing and pickles inside pickles
    put("frame_straddle.pkl", pb.frame_straddle_call(),
        "os.system whose FRAME ends inside the 'system' string")
    for enc in pb.ENCODERS:
        put(f"nested_{enc}.pkl", pb.nested_pickle(system0, enc),
            f"dict pickle holding an os.system pickle ({enc}), no loader global")
    # archives
    seven_zip(folder / "payload.7z", {"x.pkl": MALICIOUS, "docs/card.md": b"# card\n"})
    described["payload.7z"] = "7z archive, member x.pkl calls os.system"
    put("encrypted_member.zip", encrypted_zip({"secret.pkl": MALICIOUS}),
        "zip whose only member (an os.system pickle) is flagged encrypted")
    return described


# --- throughput (one mode per fresh process) ---------------------------------------------------

def _rss_mb() -> float:
    """Peak RSS of this process in MB. ``VmHWM`` (the high-water mark of this address space)
    rather than ``getrusage``'s ``ru_maxrss``: the latter kept the parent's peak across the
    fork and exec (every mode read 695 MB, the benchmark's own peak after building the
    corpus)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_mode(mode: str, folder: Path) -> dict[str, Any]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    if mode == "modelscan":
        import logging

        from modelscan.modelscan import ModelScan

        logging.getLogger("modelscan").setLevel(logging.CRITICAL)
        rss0 = _rss_mb()
        start = time.perf_counter()
        ms = ModelScan()
        ms.scan(str(folder))
        seconds = time.perf_counter() - start
        counts = dict.fromkeys(_RANK, 0)
        above: list[str] = []
        for issue in ms.issues.all_issues:
            sev = issue.severity.name.lower()
            counts[sev] = counts.get(sev, 0) + 1
            if sev in DETECTED:
                d = issue.details
                above.append(f"{Path(str(getattr(d, 'source', ''))).name}: "
                             f"{getattr(d, 'module', '')}.{getattr(d, 'operator', '')}")
        scanned = [Path(str(s).split(":")[0]) for s in ms.scanned]
        scanned_files = sorted({p for p in scanned if p.is_file()})
        scanned_bytes = sum(p.stat().st_size for p in scanned_files)
        extra = {"scanned_files": len(scanned_files), "scanned_bytes": scanned_bytes,
                 "skipped": len(ms.skipped), "errors": len(ms.errors),
                 "error_kinds": sorted({str(e).splitlines()[-1][:90] for e in ms.errors})}
    else:
        from mlthreat.scan.scanner import Scanner

        scanner = (Scanner(engines=()) if mode == "ours"
                   else Scanner(engines=(), hash_files=False) if mode == "ours-nohash"
                   else Scanner())
        rss0 = _rss_mb()
        stamps: list[tuple[float, str]] = []
        start = time.perf_counter()
        report = scanner.run([folder], progress=lambda _d, _t, p: stamps.append(
            (time.perf_counter(), Path(p).name)))
        seconds = time.perf_counter() - start
        last, per_file = start, []
        for t, name in stamps:
            per_file.append((round(t - last, 3), name))
            last = t
        counts = report.counts()
        above = sorted({f"{Path(f.path.split('!')[0]).name}: {f.engine} {f.rule} {f.symbol}"
                        for f in report.findings if f.severity in DETECTED})
        extra = {"verdicts": report.verdicts(), "engine_messages": len(report.engine_messages),
                 "slowest": sorted(per_file, reverse=True)[:4],
                 "per_format": per_format(report, folder)}
    return {"mode": mode, "files": len(files), "bytes": total, "seconds": round(seconds, 3),
            "mb_per_s": round(total / 1e6 / seconds, 1),
            "files_per_s": round(len(files) / seconds, 1),
            "rss_before_mb": round(rss0, 1), "peak_rss_mb": round(_rss_mb(), 1),
            "findings": counts, "high_or_critical": above, **extra}


def per_format(report: Any, folder: Path) -> dict[str, dict[str, Any]]:
    """Benign files by format (top-level files; a member counts with its archive): how many,
    and which have a finding at high or critical."""
    top = {r.path: r.format or "(skipped)" for r in report.files if "!" not in r.path}
    out: dict[str, dict[str, Any]] = {}
    for fmt in top.values():
        out.setdefault(fmt, {"files": 0, "flagged": []})["files"] += 1
    flagged = {f.path.split("!")[0].split("#")[0] for f in report.findings
               if f.severity in DETECTED}
    for path in sorted(flagged):
        fmt = top.get(path, "(unknown)")
        out.setdefault(fmt, {"files": 0, "flagged": []})["flagged"].append(
            str(Path(path).relative_to(folder)))
    return out


# --- recall ------------------------------------------------------------------------------------

def _worst(severities: list[str]) -> str:
    ranked = [s for s in _RANK if s in severities]
    return ranked[0] if ranked else "-"


def recall_row(path: Path) -> dict[str, str]:
    import logging

    from modelscan.modelscan import ModelScan

    from mlthreat.scan.engines import _SUPPORTED, run_engines
    from mlthreat.scan.findings import Limits
    from mlthreat.scan.scanner import _ENGINE_FORMAT, Scanner
    from mlthreat.scan.sniff import sniff

    logging.getLogger("modelscan").setLevel(logging.CRITICAL)
    with path.open("rb") as fh:
        fmt = sniff(fh, str(path)) or "unknown"
    efmt = _ENGINE_FORMAT.get(fmt, fmt)
    row = {"format": fmt}
    ours = Scanner(engines=()).run([path])
    row["ours"] = _worst([f.severity for f in ours.findings])
    for engine in ("fickling", "picklescan", "modelscan"):
        if efmt not in _SUPPORTED[engine]:
            row[engine] = "n/s"
            continue
        found, notes = run_engines(path, efmt, engines=(engine,), limits=Limits())
        row[engine] = _worst([f.severity for f in found])
        if row[engine] == "-" and any("error" in n or "failed" in n for n in notes):
            row[engine] = "error"
    ms = ModelScan()
    ms.scan(str(path))
    row["modelscan-native"] = _worst([i.severity.name.lower() for i in ms.issues.all_issues])
    if row["modelscan-native"] == "-":
        row["modelscan-native"] = "error" if ms.errors else "-" if ms.scanned else "n/s"
    row["combined"] = _worst([f.severity for f in Scanner().run([path]).findings])
    return row


# --- output ------------------------------------------------------------------------------------

def _fmt_counts(c: dict[str, int]) -> str:
    return " / ".join(str(c.get(s, 0)) for s in _RANK)


def markdown(corpus: list[tuple[str, int]], modes: list[dict[str, Any]],
             recall: dict[str, dict[str, str]], described: dict[str, str]) -> str:
    lines = ["Benign corpus:", "", "| file | MB |", "|---|---|"]
    lines += [f"| {name} | {size / 1e6:.2f} |" for name, size in corpus]
    lines += ["", "| mode | files | MB | seconds | MB/s | files/s | peak RSS MB (after "
              "imports) | findings crit / high / med / low / info |",
              "|---|---|---|---|---|---|---|---|"]
    for m in modes:
        mb = m["bytes"] / 1e6
        files = m["files"]
        if m["mode"] == "modelscan":
            mb_s = m["scanned_bytes"] / 1e6
            files = f"{m['scanned_files']} of {m['files']}"
            mbtxt = f"{mb_s:.1f} of {mb:.1f}"
        else:
            mbtxt = f"{mb:.1f}"
        lines.append(f"| {m['mode']} | {files} | {mbtxt} | {m['seconds']:.2f} | "
                     f"{m['mb_per_s']} | {m['files_per_s']} | {m['peak_rss_mb']:.0f} "
                     f"({m['rss_before_mb']:.0f}) | {_fmt_counts(m['findings'])} |")
    lines += ["", "| file | format | " + " | ".join(SCANNERS) + " |",
              "|---|---|" + "---|" * len(SCANNERS)]
    for name, row in recall.items():
        cells = [f"**{row[s]}**" if row[s] in DETECTED else row[s] for s in SCANNERS]
        label = f"{name} (expected {EXPECTED_BELOW[name]})" if name in EXPECTED_BELOW else name
        lines.append(f"| {label} | {row['format']} | " + " | ".join(cells) + " |")
    scored = {k: r for k, r in recall.items() if k not in EXPECTED_BELOW}
    n = len(scored)
    rec = []
    for s in SCANNERS:
        hit = sum(r[s] in DETECTED for r in scored.values())
        sup = sum(r[s] != "n/s" for r in scored.values())
        rec.append(f"{hit}/{n} ({hit}/{sup} of readable)")
    lines.append("| **recall** (expected-below-high rows left out) | | " + " | ".join(rec) + " |")
    lines += ["", "| format | malicious | " + " | ".join(SCANNERS) + " | benign files | "
              "benign high/critical: ours | default |", "|---|---|" + "---|" * (len(SCANNERS) + 3)]
    pf = {m["mode"]: m.get("per_format", {}) for m in modes}
    fmts = sorted({r["format"] for r in scored.values()} | set(pf.get("ours", {})))
    for fmt in fmts:
        rows = [r for r in scored.values() if r["format"] == fmt]
        ours_b = pf.get("ours", {}).get(fmt, {"files": 0, "flagged": []})
        dflt = pf.get("default", {}).get(fmt, {"files": 0, "flagged": []})
        hit = ["—" if not rows else "n/s" if all(r[s] == "n/s" for r in rows)
               else f"{sum(r[s] in DETECTED for r in rows)}/{len(rows)}" for s in SCANNERS]
        lines.append(f"| {fmt} | {len(rows)} | " + " | ".join(hit) + f" | {ours_b['files']} | "
                     f"{len(ours_b['flagged'])} | {len(dflt['flagged'])} |")
    lines += ["", "Malicious files:", ""] + [f"- `{k}`: {v}" for k, v in described.items()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, help="build the corpora here (kept)")
    ap.add_argument("--json", type=Path, metavar="FILE",
                    help="also write every figure as one JSON document to FILE")
    ap.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # internal: child process
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.folder)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
        work = args.workdir or Path(tmp)
        t0 = time.perf_counter()
        build_benign(work / "benign")
        described = build_malicious(work / "malicious")
        build_s = time.perf_counter() - t0
        print(f"corpora built in {build_s:.1f} s", file=sys.stderr)
        benign = work / "benign"
        corpus = sorted((str(p.relative_to(benign)), p.stat().st_size)
                        for p in benign.rglob("*") if p.is_file())
        modes = []
        for mode in MODES:
            out = subprocess.run([sys.executable, __file__, "--mode", mode, "--folder",
                                  str(work / "benign")], check=True, capture_output=True,
                                 text=True).stdout
            modes.append(json.loads(out.strip().splitlines()[-1]))
            print(f"{mode}: {modes[-1]['seconds']} s", file=sys.stderr)
        recall = {name: recall_row(work / "malicious" / name) for name in described}
    from mlthreat.scan.engines import engine_versions

    result = {"corpus": corpus, "corpus_bytes": sum(s for _, s in corpus),
              "build_seconds": round(build_s, 1), "engines": engine_versions(),
              "throughput": modes, "recall": recall, "malicious": described}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"engines: {result['engines']}; benign corpus {result['corpus_bytes'] / 1e6:.1f} MB")
    print(markdown(corpus, modes, recall, described))
    for m in modes:
        print(f"\n{m['mode']} high/critical on benign: {m['high_or_critical']}")
        print(f"{m['mode']} details: " + json.dumps(
            {k: m[k] for k in ("verdicts", "engine_messages", "slowest", "scanned_files",
                               "skipped", "errors", "error_kinds", "per_format") if k in m}))


if __name__ == "__main__":
    main()
