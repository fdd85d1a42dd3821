"""Fine-tuning a local Hugging Face causal LM, fully or with LoRA adapters (``peft``).

The model is read from a folder on disk (``save_pretrained`` output with ``tokenizer.json``);
nothing is downloaded. It plugs into the same loop as the genloom GPT: ``forward(idx, targets)``
returns (logits, loss), checkpoints hold the trainable parameters only (the adapters, for LoRA),
and ``generate`` uses the model's own KV cache. The final model is saved merged (plain weights,
servable by transformers or vLLM), or as base path + adapter when ``merge_lora: false``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from genloom.core.errors import ConfigError, MissingDependencyError, NotFoundError
from genloom.core.registry import MODELS
from genloom.models.base import PrepareInput, TrainData, TrainPlan
from genloom.models.gpt import decay_groups
from genloom.models.text_family import TextFamily

if TYPE_CHECKING:
    import tokenizers

    from genloom.models.config import HFCausalLMConfig

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",  # transformers 5 keeps the chat template in its own file
    "chat_template.json",
)


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise MissingDependencyError("transformers", "pip install 'genloom[hf]'") from e
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # no "Loading weights" bar in genloom's output
    return transformers


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft 0.21 reads a property that transformers 5 deprecates (a FutureWarning on every wrap)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _nf4_config(tf: Any, compute_dtype: torch.dtype) -> Any:
    """QLoRA's quantisation: 4-bit NormalFloat with double quantisation, matmuls in ``compute_dtype``."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError("bitsandbytes (quantize: nf4)", "pip install 'genloom[qlora]'") from e
    return tf.BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def load_hf_tokenizer(path: str | Path) -> tokenizers.Tokenizer:
    """The ``tokenizers`` tokenizer of a local Hugging Face model (its tokenizer.json): pack data with it."""
    from tokenizers import Tokenizer

    f = Path(path) / "tokenizer.json"
    if not f.exists():
        raise NotFoundError(
            f"no tokenizer.json in {path}",
        )
    return Tokenizer.from_file(str(f))


class HFCausalLM(nn.Module):
    """A transformers causal LM (optionally wrapped by peft) behind genloom's model interface."""

    def __init__(self, hf: nn.Module, tokenizer: tokenizers.Tokenizer, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.hf = hf
        self.tokenizer = tokenizer
        self.cfg = cfg  # the HFCausalLMConfig as a dict

    @classmethod
    def from_config(
        cls, cfg: HFCausalLMConfig, device: torch.device, compute_dtype: torch.dtype = torch.float32
    ) -> HFCausalLM:
        """Loads ``cfg.path`` in float32 and adds LoRA adapters if asked.

        ``compute_dtype``: the dtype 4-bit layers dequantize to for their matmuls (``quantize:
        nf4``); the loop passes its plan's precision, which follows the machine probe
        (``genloom.train.precision``), so an AVX2-only CPU never computes in emulated bf16.
        """
        tf = _transformers()
        path = Path(cfg.path).expanduser()
        if not (path / "config.json").exists():
            raise ConfigError(
                f"no Hugging Face model at {path}",
                path="train.model.path",
                hint="a folder written by save_pretrained (config.json + weights + tokenizer.json)",
            )
        quantized = cfg.quantize == "nf4"
        if quantized:
            hf = tf.AutoModelForCausalLM.from_pretrained(
                str(path),
                local_files_only=True,
                dtype=torch.float32,
                quantization_config=_nf4_config(tf, compute_dtype),
                device_map={"": str(device)},
            )
        else:
            hf = tf.AutoModelForCausalLM.from_pretrained(
                str(path), local_files_only=True, dtype=torch.float32
            )
        if cfg.gradient_checkpointing:
            hf.gradient_checkpointing_enable()
        if cfg.lora is not None:
            try:
                import peft
            except ImportError as e:
                raise MissingDependencyError("peft", "pip install 'genloom[hf]'") from e
            lora = peft.LoraConfig(
                r=cfg.lora.r,
                lora_alpha=cfg.lora.alpha,
                lora_dropout=cfg.lora.dropout,
                target_modules=cfg.lora.target_modules,
                task_type="CAUSAL_LM",
            )
            with _quiet_peft():
                if quantized:  # norms in float32, inputs that carry gradients into the adapters
                    hf = peft.prepare_model_for_kbit_training(
                        hf, use_gradient_checkpointing=cfg.gradient_checkpointing
                    )
                hf = peft.get_peft_model(hf, lora)
        if quantized:
            # bitsandbytes repacks 4-bit weights for its AVX512-BF16 CPU kernel the first time the
            # model runs in eval mode; that kernel has no backward, so training after an evaluation
            # would stop the gradient at every frozen layer. Keep the trainable layout.
            for module in hf.modules():
                if hasattr(module, "support_avx512bf16_for_cpu"):
                    module.support_avx512bf16_for_cpu = False
        else:  # a 4-bit model is placed by device_map and cannot be moved
            hf = hf.to(device)
        return cls(hf, load_hf_tokenizer(path), cfg.model_dump(mode="json"))

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) and the mean cross-entropy against ``targets`` (B, T); -1 is ignored."""
        logits = self.hf(input_ids=idx, use_cache=False).logits  # (B, T, vocab)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(
            logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
        )

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups over the trainable parameters: matrices decay, vectors do not."""
        return decay_groups([p for p in self.parameters() if p.requires_grad], weight_decay)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        sample: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        done: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Same contract as ``GPT.generate``, with the model's own KV cache (past_key_values)."""
        self.eval()
        limit = int(getattr(self.base_config(), "max_position_embeddings", 1 << 20))
        seq = idx[:, -(limit - max_new_tokens) :] if idx.size(1) + max_new_tokens > limit else idx
        base = self.hf.get_base_model() if hasattr(self.hf, "get_base_model") else self.hf
        # transformers 5 renamed past_key_values to cache
        cache_kw = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        out = self.hf(input_ids=seq, use_cache=True)
        for _ in range(max_new_tokens):
            nxt = sample(out.logits[:, -1, :].float(), seq)  # (B,)
            seq = torch.cat((seq, nxt[:, None]), dim=1)
            if done is not None and bool(done(seq).all()):
                break
            out = self.hf(input_ids=nxt[:, None], use_cache=True, **{cache_kw: out.get(cache_kw)})
        return seq

    def base_config(self) -> Any:
        """The transformers config of the underlying model."""
        return self.hf.config

    @property
    def stop_ids(self) -> list[int]:
        """The model's end-of-sequence token ids (generation stops at them)."""
        eos = getattr(self.hf.config, "eos_token_id", None)
        return [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]

    def save(self, out_dir: Path) -> None:
        """Writes ``hf_model/`` (merged weights) or ``adapter/`` (LoRA only) plus the tokenizer files."""
        out_dir = Path(out_dir)
        src = Path(self.cfg["path"]).expanduser()
        is_peft = hasattr(self.hf, "merge_and_unload")
        merge = self.cfg.get("merge_lora", True)
        target = out_dir / "hf_model"
        if not is_peft:
            self.hf.save_pretrained(str(target), safe_serialization=True)
        elif not merge:
            target = out_dir / "adapter"
            self.hf.save_pretrained(str(target))  # type: ignore[operator]
        elif self.cfg.get("quantize", "none") != "none":
            # QLoRA: merge into the full-precision base, not into its 4-bit copy (no requantisation)
            with tempfile.TemporaryDirectory() as adapter:
                self.hf.save_pretrained(adapter)  # type: ignore[operator]
                merged = _base_with_adapter(src, Path(adapter)).merge_and_unload()
            merged.save_pretrained(str(target), safe_serialization=True)
        else:
            self.hf.merge_and_unload().save_pretrained(str(target), safe_serialization=True)  # type: ignore[operator]
        for name in TOKENIZER_FILES:
            if (src / name).exists():
                shutil.copy(src / name, target / name)
        shutil.copy(src / "tokenizer.json", out_dir / "tokenizer.json")

    @classmethod
    def load(cls, model_dir: Path) -> HFCausalLM:
        """The fine-tuned model saved by ``save`` (merged, or base + adapter)."""
        tf = _transformers()
        model_dir = Path(model_dir)
        cfg = json.loads((model_dir / "config.json").read_text())["train"]["model"]
        if (model_dir / "hf_model").exists():
            hf = tf.AutoModelForCausalLM.from_pretrained(
                str(model_dir / "hf_model"), local_files_only=True, dtype=torch.float32
            )
        else:
            hf = _base_with_adapter(Path(cfg["path"]), model_dir / "adapter")
        return cls(hf, load_hf_tokenizer(model_dir), cfg)


def _chat_template(
    folder: Path, add_generation_prompt: bool = False
) -> Callable[[list[dict[str, str]]], str]:
    """A conversation -> text through the chat template of the tokenizer in ``folder`` (transformers
    renders it); a ConfigError when the model has none."""
    tf = _transformers()
    tok = tf.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if not getattr(tok, "chat_template", None):
        raise ConfigError(
            f"the model in {folder} has no chat template (none in tokenizer_config.json or chat_template.jinja)",
            path="train.chat",
            hint="use a chat model, or add a chat_template to its tokenizer_config.json",
        )

    def render(messages: list[dict[str, str]]) -> str:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        return str(text)

    return render


def _base_with_adapter(base_path: Path, adapter_dir: Path) -> Any:
    """The full-precision base model from disk with the LoRA adapter saved in ``adapter_dir``."""
    import peft

    tf = _transformers()
    base = tf.AutoModelForCausalLM.from_pretrained(
        str(Path(base_path).expanduser()), local_files_only=True, dtype=torch.float32
    )
    with _quiet_peft():
        return peft.PeftModel.from_pretrained(base, str(adapter_dir))


@MODELS.register("hf_causal_lm")
class HFCausalLMFamily(TextFamily):
    """A local Hugging Face causal LM fine-tuned (full, LoRA or QLoRA) with its own tokenizer."""

    name = "hf_causal_lm"

    def tokenizer_key(
        self, train_cfg: Any, file_digests: Callable[[list[str]], dict[str, str]]
    ) -> dict[str, Any]:
        path = train_cfg.model.path  # the model brings its own tokenizer: its file is the key
        digest = file_digests([f"{path}/tokenizer.json"])
        return {"pretrained": path, "sha256": next(iter(digest.values()), "")}

    def prepare_tokenizer(
        self, inp: PrepareInput, train_cfg: Any, texts: Iterator[str], control_tokens: list[str]
    ) -> tokenizers.Tokenizer:
        return load_hf_tokenizer(inp.resolve(train_cfg.model.path))

    def chat_formatter(self, inp: PrepareInput, train_cfg: Any) -> Callable[[list[dict[str, str]]], str]:
        """The base model's own chat template (``chat_template`` of its tokenizer_config.json)."""
        return _chat_template(Path(inp.resolve(train_cfg.model.path)))

    def chat_prompt(self, model_dir: Path, messages: list[dict[str, str]]) -> str:
        folder = model_dir / "hf_model" if (model_dir / "hf_model").is_dir() else model_dir / "adapter"
        return _chat_template(folder, add_generation_prompt=True)(messages)

    def plan(
        self, cfg: Any, data: TrainData, budget_s: float | None, device: torch.device
    ) -> tuple[dict[str, Any], int]:
        return {"block_size": cfg.block_size}, 1024

    def default_lr(self, cfg: Any, width: int) -> float:
        return 2e-5 if cfg.lora is None else 2e-4  # full fine-tuning moves a pretrained model gently

    def build(self, plan: TrainPlan, cfg: Any, device: torch.device, compute_dtype: torch.dtype) -> nn.Module:
        return HFCausalLM.from_config(cfg, device, compute_dtype=compute_dtype)

    def save(self, model: nn.Module, plan: TrainPlan, out_dir: Path) -> dict[str, Any]:
        model.save(out_dir)  # type: ignore[operator]
        return {}

    def load(self, model_dir: Path, config: dict[str, Any]) -> tuple[nn.Module, Any]:
        model = HFCausalLM.load(model_dir)
        return model, model.tokenizer

    def export_hf(self, model_dir: Path, out_dir: Path) -> Path:
        if not (Path(model_dir) / "hf_model").is_dir():
            raise ConfigError(
                f"{model_dir} holds a LoRA adapter, not merged weights",
                path="train.model.merge_lora",
                hint="train with merge_lora: true, or load the adapter with peft on its base model",
            )
        shutil.copytree(Path(model_dir) / "hf_model", out_dir, dirs_exist_ok=True)
        return Path(out_dir)
