"""The configs of the model families (``train.model``): torch-free, so validating a pipeline file
never imports torch."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class GPTModelConfig(BaseModel):
    """A genloom GPT trained from scratch (Llama layout); ``preset: auto`` sizes it from the data and budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["gpt"] = "gpt"
    #: the pipeline trains its tokenizer on the corpus (so control and chat tokens can be added)
    trains_tokenizer: ClassVar[bool] = True
    #: Muon applies to its hidden matrices
    muon: ClassVar[bool] = True
    preset: Literal["auto", "tiny", "mini", "small", "base", "medium", "large"] = Field(
        "auto", description="Named size; auto: the largest that the time budget and the data size support."
    )
    n_layer: int | None = Field(None, ge=1, description="Transformer blocks (overrides the preset).")
    n_head: int | None = Field(None, ge=1, description="Attention heads (overrides the preset).")
    n_kv_head: int | None = Field(
        None, ge=1, description="Key/value heads; fewer than n_head is grouped-query attention."
    )
    n_embd: int | None = Field(None, ge=8, description="Width of the residual stream (overrides the preset).")
    ffn_hidden: int | None = Field(None, ge=8, description="SwiGLU hidden width; None: about 8/3 * n_embd.")
    block_size: int | None = Field(None, ge=8, description="Context length in tokens (overrides the preset).")
    dropout: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="Dropout on the embeddings and residual branches; None: 0.1 when training sees the data 4+ times, else 0.",
    )
    attn_dropout: float | None = Field(
        None, ge=0.0, lt=1.0, description="Dropout on the attention probabilities; None: the same as dropout."
    )
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base frequency.")
    tie_embeddings: bool = Field(True, description="Share the input embedding with the output projection.")


class LoraConfig(BaseModel):
    """Low-rank adapters (Hu et al. 2021) through ``peft``: only A and B matrices are trained."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    r: int = Field(8, ge=1, description="Rank of the adapters.")
    alpha: float = Field(16.0, gt=0, description="Scale: the update is alpha / r * B A.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="Module names to adapt, or all-linear (every linear layer but the output head).",
    )


class HFCausalLMConfig(BaseModel):
    """Fine-tuning of a local Hugging Face causal LM (a folder on disk; nothing is downloaded)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["hf_causal_lm"] = "hf_causal_lm"
    trains_tokenizer: ClassVar[bool] = False  # it brings its own
    muon: ClassVar[bool] = False
    path: str = Field(
        description="Folder with config.json, the weights and tokenizer.json (save_pretrained output)."
    )
    lora: LoraConfig | None = Field(
        default_factory=LoraConfig, description="LoRA adapters; null: full fine-tuning."
    )
    block_size: int = Field(512, ge=8, description="Training context length in tokens.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward to save memory."
    )
    merge_lora: bool = Field(
        True, description="Save the merged model (plain weights) rather than base + adapter."
    )
    quantize: Literal["none", "nf4"] = Field(
        "none",
        description="nf4: QLoRA, the frozen base in 4-bit NormalFloat (bitsandbytes; CPU or GPU), LoRA on top.",
    )

    @model_validator(mode="after")
    def _qlora_needs_lora(self) -> HFCausalLMConfig:
        if self.quantize != "none" and self.lora is None:
            raise ValueError(
                "quantize: nf4 trains LoRA adapters on a frozen 4-bit base: set lora (or quantize: none)"
            )
        return self


ModelConfig = Annotated[GPTModelConfig | HFCausalLMConfig, Field(discriminator="type")]
