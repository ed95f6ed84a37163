"""Loose names and IDs: the keys, the ID forms, and what ``kb.get`` suggests."""

from __future__ import annotations

import pytest

from mlthreat import kb as kbmod
from mlthreat.kb.names import canonical_ids, has_ml_words, name_key, suggest_id


def test_name_key_survives_word_forms_and_the_ml_to_ai_renames():
    assert name_key("Exfiltrate via ML Inference API") == "exfiltr via ai infer api"
    assert name_key("Exfiltration via AI Inference API") == "exfiltr via ai infer api"
    assert name_key("Machine-Learning Model Access") == name_key("AI model access")
    assert name_key("Data") == "data"  # stems keep four letters
    assert has_ml_words("Evade ML Model") and has_ml_words("machine learning model")
    assert not has_ml_words("Evade AI Model") and not has_ml_words("HTML injection")


def test_canonical_ids():
    assert canonical_ids("T0043") == ["AML.T0043"]
    assert canonical_ids(" aml.t43.1 ") == ["AML.T0043.001"]
    assert canonical_ids("ta1", ("AML", "ACME")) == ["AML.TA0001", "ACME.TA0001"]
    assert canonical_ids("M0004.001") == []  # only techniques have sub-IDs
    assert canonical_ids("Craft Adversarial Data") == []


@pytest.mark.parametrize("text,want", [
    ("T0043", "AML.T0043"),
    ("AML.T0043.01", "AML.T0043.001"),
    ("cs0", "AML.CS0000"),
    ("AML.T0043.009", "AML.T0043"),          # an unknown sub-technique: its parent
    ("Craft Adversarial Data", "AML.T0043"),
    ("craft adversarial data", "AML.T0043"),
    ("Exfiltrate via ML Inference API", "AML.T0024"),
    ("ML Attack Staging", "AML.TA0001"),     # a former name
    ("AML.T0199", None),                     # never a near number (AML.T0109)
    ("AML.TA0017", None),                    # nor another kind (AML.T0017)
    ("adversarial", None),
])
def test_suggest_id(embedded: kbmod.KnowledgeBase, text: str, want: str | None) -> None:
    assert suggest_id(embedded, text) == want
    with pytest.raises(kbmod.UnknownIdError) as info:
        embedded.get(text)
    assert info.value.suggestion == want
