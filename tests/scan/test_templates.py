"""Chat templates outside GGUF: tokenizer_config.json, chat_template.json, .jinja files and YAML
configs, recognised by content (by name only for .jinja/.j2 text) and checked by the same
Jinja syntax-tree walk as GGUF's. Every file is written here; no template is ever rendered."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from format_builders import (
    CHATML,
    SSTI,
    TOOL_SSTI,
    hf_model_folder,
    serving_yaml,
    tokenizer_config,
    write,
)

from mlthreat.scan.findings import TECHNIQUES, Finding, FormatError, Limits
from mlthreat.scan.formats import gguf, templates
from mlthreat.scan.policy import Policy
from mlthreat.scan.scanner import Scanner
from mlthreat.scan.sniff import sniff

UNSAFE = TECHNIQUES["unsafe"]


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.default()


def sniffed(path: Path) -> str | None:
    with open(path, "rb") as fh:
        return sniff(fh, str(path))


def check(path: Path, policy: Policy) -> tuple[str | None, list[Finding]]:
    """The format sniffed from ``path`` and its analyser's findings (none when skipped)."""
    fmt = sniffed(path)
    if fmt is None:
        return None, []
    fn = templates.analyze_jinja if fmt == "jinja" else templates.analyze_config
    with open(path, "rb") as fh:
        return fmt, fn(fh, path=str(path), size=path.stat().st_size, limits=Limits(),
                       policy=policy)


def summary(findings: list[Finding]) -> list[tuple[str, str, str, str, str]]:
    return sorted((f.rule, f.severity, f.symbol, f.technique, f.location) for f in findings)


# --- each kind of file ---------------------------------------------------------------------

def test_tokenizer_config_string_template(tmp_path: Path, policy: Policy) -> None:
    fmt, found = check(write(tmp_path, "tokenizer_config.json", tokenizer_config(SSTI)), policy)
    assert fmt == "template-config"
    assert summary(found) == [("template.template-code", "critical", "cycler", UNSAFE,
                               "key 'chat_template'")]
    assert found[0].format == "template-config"
    assert found[0].path.endswith("tokenizer_config.json")
    assert found[0].message.startswith("chat template 'chat_template' reaches Python internals")
    benign = write(tmp_path, "ok/tokenizer_config.json", tokenizer_config(CHATML))
    assert check(benign, policy) == ("template-config", [])


def test_tokenizer_config_named_templates(tmp_path: Path, policy: Policy) -> None:
    named = [{"name": "default", "template": CHATML}, {"name": "tool_use", "template": TOOL_SSTI},
             {"name": "rag", "template": "{% for %}"}]
    fmt, found = check(write(tmp_path, "tokenizer_config.json", tokenizer_config(named)),
                       policy)
    assert fmt == "template-config"
    assert summary(found) == [
        ("template.template-code", "critical", "joiner", UNSAFE,
         "key 'chat_template' template 'tool_use'"),
        ("template.template-unparseable", "medium", "", UNSAFE,
         "key 'chat_template' template 'rag'")]
    benign = [{"name": "default", "template": CHATML}, {"name": "tool_use", "template": CHATML}]
    assert check(write(tmp_path, "b/tokenizer_config.json", tokenizer_config(benign)),
                 policy) == ("template-config", [])


def test_chat_template_json(tmp_path: Path, policy: Policy) -> None:
    path = write(tmp_path, "chat_template.json", json.dumps({"chat_template": SSTI}))
    fmt, found = check(path, policy)
    assert (fmt, summary(found)) == ("template-config", [
        ("template.template-code", "critical", "cycler", UNSAFE, "key 'chat_template'")])
    benign = write(tmp_path, "b/chat_template.json", json.dumps({"chat_template": CHATML}))
    assert check(benign, policy) == ("template-config", [])


@pytest.mark.parametrize("name", ["chat_template.jinja", "additional_chat_templates/tool.J2"])
def test_jinja_file(tmp_path: Path, policy: Policy, name: str) -> None:
    fmt, found = check(write(tmp_path, name, SSTI + "\n"), policy)
    assert (fmt, summary(found)) == ("jinja", [
        ("template.template-code", "critical", "cycler", UNSAFE, "file")])
    assert found[0].format == "jinja"
    assert check(write(tmp_path, f"b/{name}", CHATML), policy) == ("jinja", [])


def test_yaml_config(tmp_path: Path, policy: Policy) -> None:
    yaml_text = serving_yaml("{{ self.__init__.__globals__.__builtins__ }}")
    fmt, found = check(write(tmp_path, "serve.yaml", yaml_text), policy)
    assert (fmt, summary(found)) == ("template-config", [
        ("template.template-code", "critical", "self", UNSAFE,
         "key 'serving.chat_template'")])
    # axolotl names a built-in template (a name is clean) or gives one inline
    named = write(tmp_path, "axolotl.yml", "base_model: x\nchat_template: chatml\n")
    assert check(named, policy) == ("template-config", [])
    inline = write(tmp_path, "inline.yml", "chat_template: jinja\nchat_template_jinja: "
                   "\"{{ lipsum.__globals__['os'].popen('id').read() }}\"\n")
    fmt, found = check(inline, policy)
    assert (fmt, summary(found)) == ("template-config", [
        ("template.template-code", "critical", "lipsum", UNSAFE, "key 'chat_template_jinja'")])


def test_files_without_a_template_are_skipped(tmp_path: Path) -> None:
    readme = write(tmp_path, "README.md", "# Model\n\nUse `{{ messages }}` and "
                   "{{ cycler.__init__ }} in your own template.\n")
    assert sniffed(readme) is None
    assert sniffed(write(tmp_path, "config.json", json.dumps({"hidden_size": 4096}))) is None
    assert sniffed(write(tmp_path, "notes.yaml", "chat_templates_dir: x\n")) is None
    # a .jinja name does not make binary content a template
    assert sniffed(write(tmp_path, "x.jinja", b"\xff\xfe\x00binary")) is None
    # bigger than the cap: not read as a template file
    big = write(tmp_path, "big.json", '{"chat_template": "x", "pad": "'
                + "a" * templates.MAX_TEMPLATE_FILE + '"}')
    assert sniffed(big) is None


def test_bad_chat_template_value_is_unparseable(policy: Policy) -> None:
    data = json.dumps({"chat_template": [{"name": "x"}]}).encode()
    assert sniff(io.BytesIO(data), "tokenizer_config.json") == "template-config"
    with pytest.raises(FormatError):
        templates.analyze_config(io.BytesIO(data), path="t.json", size=len(data),
                                 limits=Limits(), policy=policy)


def test_gguf_uses_the_shared_check() -> None:
    assert gguf.template_problem is templates.template_problem
    assert gguf.SUSPICIOUS_NAMES is templates.SUSPICIOUS_NAMES


# --- a model folder ------------------------------------------------------------------------

def model_folder(tmp_path: Path) -> Path:
    return hf_model_folder(tmp_path / "model", SSTI)


def test_folder_with_malicious_tokenizer_config(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    report = Scanner(engines=()).run([folder])
    assert [(Path(f.path).name, f.rule, f.severity) for f in report.findings] == [
        ("tokenizer_config.json", "template.template-code", "critical")]
    verdicts = {Path(r.path).name: (r.format, r.verdict) for r in report.files}
    assert verdicts == {"model.safetensors": ("safetensors", "clean"),
                        "tokenizer_config.json": ("template-config", "findings"),
                        "config.json": (None, "skipped"), "README.md": (None, "skipped")}
    assert report.exit_code("critical") == 1


def test_template_inside_an_archive(tmp_path: Path) -> None:
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("m/chat_template.jinja", TOOL_SSTI)
        z.writestr("m/notes.txt", "{{ cycler }}")
    report = Scanner(engines=()).run([archive])
    assert [(f.path, f.format, f.rule) for f in report.findings] == [
        (f"{archive}!m/chat_template.jinja", "jinja", "template.template-code")]


def test_cli_fails_on_critical(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    out = subprocess.run([sys.executable, "-m", "mlthreat", "scan", str(folder), "--engines",
                          "none", "--fail-on", "critical", "--json"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert [(Path(f["path"]).name, f["rule"], f["severity"]) for f in doc["findings"]] == [
        ("tokenizer_config.json", "template.template-code", "critical")]
