"""The sense-replace module on its own: a projection to a wider teacher space, the nearest sense of each
token, a save/load round trip, and which saved folders distil-jobs trusts to load."""

from __future__ import annotations

import json

import torch
from torch import nn

from distil_jobs.senses.replace import CODE_FILE, PORTABLE_TYPE, SenseReplace, is_own_code, make_portable

# Token 1 has two senses, token 2 none, token 3 one (vocabulary of 4, teacher width 3).
CENTROIDS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
OFFSETS = torch.tensor([0, 0, 2, 2, 3])


def _module() -> SenseReplace:
    proj = nn.Linear(2, 3)
    with torch.no_grad():
        proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]))
        proj.bias.zero_()
    return SenseReplace.build(proj, CENTROIDS, OFFSETS)


def test_each_token_becomes_its_nearest_sense_and_tokens_without_senses_keep_their_projection():
    module = _module()
    vectors = torch.tensor([[[0.2, 0.9], [0.9, 0.1], [3.0, 4.0], [0.0, 0.0]]])
    out = module({"token_embeddings": vectors, "input_ids": torch.tensor([[1, 1, 2, 3]])})["token_embeddings"][0]
    assert torch.equal(out[0], CENTROIDS[1])  # token 1, closer to its second sense
    assert torch.equal(out[1], CENTROIDS[0])  # token 1, closer to its first
    assert torch.allclose(out[2], torch.tensor([3.0, 4.0, 3.5]))  # token 2 has no senses: P(v)
    assert torch.equal(out[3], CENTROIDS[2])  # token 3: its only sense


def test_a_saved_module_loads_back_the_same(tmp_path):
    module = _module()
    module.save(str(tmp_path))
    loaded = SenseReplace.load(str(tmp_path))
    for key, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_only_a_folder_with_this_exact_code_is_trusted(tmp_path):
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
        {"idx": 1, "name": "1", "path": "1_SenseReplace", "type": "distil_jobs.senses.replace.SenseReplace"}]))
    assert not is_own_code(str(tmp_path))  # no code shipped yet
    make_portable(str(tmp_path))
    assert json.loads((tmp_path / "modules.json").read_text())[1]["type"] == PORTABLE_TYPE
    assert is_own_code(str(tmp_path))
    with open(tmp_path / CODE_FILE, "a") as f:
        f.write("\nimport os  # any change\n")
    assert not is_own_code(str(tmp_path))
