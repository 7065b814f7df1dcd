"""A transformers model the user passes in is left as it was: its attention implementation, its
linear layers' class and its mode; the engine switches them for its own forwards only."""
from __future__ import annotations

import pytest
import torch
import transformers

from conftest import tiny_model
from lookahead import Lookahead


def test_a_passed_model_is_unchanged_and_still_decodes_exactly(tiny_model_dir):
    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    model = tiny_model(vocab=len(tok))
    model.set_attn_implementation("sdpa")
    classes = [type(m) for m in model.modules()]
    lm = Lookahead(model, tok, drafter="prompt-lookup")
    prompt = "a b c a b c a b c a b"
    spec = lm.generate([prompt], max_new_tokens=12)[0]
    plain = lm.generate([prompt], max_new_tokens=12, speculate=False)[0]
    assert spec.token_ids == plain.token_ids and spec.error is None
    assert model.config._attn_implementation == "sdpa" and [type(m) for m in model.modules()] == classes
    assert not model.training
    ids = torch.tensor([tok(prompt)["input_ids"]])
    assert model(ids).logits.shape[-1] == len(tok)  # its own forward runs its own attention


def test_a_model_in_training_mode_is_refused(tiny_model_dir):
    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match="training mode"):
        Lookahead(tiny_model(vocab=len(tok)).train(), tok)
