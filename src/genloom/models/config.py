"""The configs of the model families (``train.model``): torch-free, so validating a pipeline file
never imports torch."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from genloom.models.image_data import ImageGANConfig, ImageVAEConfig
from genloom.models.series_data import SeriesGANConfig, SeriesVAEConfig


class GPTModelConfig(BaseModel):
    """A genloom GPT trained from scratch (Llama layout); ``preset: auto`` sizes it from the data and budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["gpt"] = "gpt"
    #: the pipeline trains its tokenizer on the corpus (so control and chat tokens can be added)
    trains_tokenizer: ClassVar[bool] = True
    #: Muon applies to its hidden matrices
    muon: ClassVar[bool] = True
    #: trains on conversations (train.chat)
    chat: ClassVar[bool] = True
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
    chat: ClassVar[bool] = True  # with the base model's own chat template
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


ColumnType = Literal["numeric", "integer", "categorical", "boolean", "datetime", "text", "id", "ignore"]


class ColumnSpec(BaseModel):
    """How one column of a table is modelled (overrides what is inferred from its Arrow type)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: ColumnType | None = Field(
        None,
        description=(
            "numeric, integer, categorical, boolean, datetime; text: passed through unmodelled (left out);"
            " id: a key generated unique (row number), not learned; ignore: left out. None: inferred."
        ),
    )
    min: float | None = Field(None, description="Generated values below are rejected (a constraint).")
    max: float | None = Field(None, description="Generated values above are rejected (a constraint).")
    round: int | None = Field(None, ge=0, description="Round generated values to this many decimals.")
    unique: bool = Field(False, description="Generated values are unique (rows repeating one are rejected).")


class PrivacyConfig(BaseModel):
    """Differential privacy through DP-SGD (Opacus) on the part of the model that sees real rows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epsilon: float = Field(gt=0, description="Privacy budget spent over the whole training.")
    delta: float = Field(1e-5, gt=0, lt=1, description="Failure probability of the guarantee.")
    max_grad_norm: float = Field(1.0, gt=0, description="Per-sample gradient clipping norm.")


class TabularConfig(BaseModel):
    """What the two table families share: the data transformer, the constraints, the privacy filter."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trains_tokenizer: ClassVar[bool] = False
    muon: ClassVar[bool] = False
    chat: ClassVar[bool] = False
    columns: dict[str, ColumnSpec] = Field(
        default_factory=dict, description="Per-column type overrides and constraints, by column name."
    )
    exclude: list[str] = Field(
        default_factory=list, description="Columns left out (besides genloom's own id, text, source, meta)."
    )
    epochs: int = Field(100, ge=1, description="Passes over the training rows (train.max_steps overrides).")
    batch_size: int = Field(500, ge=2, description="Rows per step (train.batch_size overrides).")
    max_modes: int = Field(
        10, ge=1, description="Gaussian mixture components per numeric column (mode-specific normalisation)."
    )
    max_categories: int = Field(
        100,
        ge=2,
        description="Most frequent levels kept per categorical column; the rest are grouped as one.",
    )
    min_category_fraction: float = Field(
        0.0, ge=0, lt=1, description="Levels rarer than this fraction of rows are grouped with the rest."
    )
    schedule: Literal["constant", "cosine", "wsd"] = Field(
        "constant",
        description="Learning-rate schedule over the epochs: constant (the papers'), cosine decay to "
        "train.min_lr_ratio of lr, or wsd (constant, then linear decay over train.decay_fraction).",
    )
    rules: list[str] = Field(
        default_factory=list,
        description="Row rules enforced by rejection, e.g. 'end_date >= start_date' or 'age >= 18' (column op column|number).",
    )
    dcr_reject: float | None = Field(
        None,
        ge=0,
        description=(
            "Reject generated rows whose distance to the closest training row is below this (in the"
            " DCR space: numbers standardised, levels one-hot scaled by 1/sqrt(2)); None: below the 1st"
            " percentile of the validation rows' distances to the training rows."
        ),
    )
    privacy: PrivacyConfig | None = Field(None, description="Differential privacy (DP-SGD); None: off.")
    target: str | None = Field(
        None,
        description="Column a classifier predicts in the utility score (train on synthetic, test on real); None: the last categorical column.",
    )
    max_tries: int = Field(
        50,
        ge=1,
        description="Batches drawn per requested batch before a condition or constraint is declared too rare.",
    )


class TabularGANConfig(TabularConfig):
    """CTGAN-style conditional GAN for mixed-type rows (Xu et al. 2019): WGAN-GP, PacGAN critic,
    training-by-sampling over categorical levels."""

    type: Literal["tabular_gan"] = "tabular_gan"
    embedding_dim: int = Field(128, ge=1, description="Noise dimension.")
    generator_dims: list[int] = Field(
        default_factory=lambda: [256, 256], description="Residual layer widths of the generator."
    )
    critic_dims: list[int] = Field(
        default_factory=lambda: [256, 256], description="Layer widths of the critic."
    )
    pac: int = Field(
        10, ge=1, description="Rows the critic judges together (PacGAN); divides the batch size."
    )
    critic_steps: int = Field(1, ge=1, description="Critic updates per generator update.")
    gp_weight: float = Field(10.0, ge=0, description="Gradient-penalty weight (WGAN-GP).")
    lr: float = Field(2e-4, gt=0, description="Learning rate of generator and critic (Adam, betas 0.5/0.9).")
    weight_decay: float = Field(1e-6, ge=0, description="Weight decay of generator and critic.")


class TabularVAEConfig(TabularConfig):
    """TVAE-style variational autoencoder for mixed-type rows (Xu et al. 2019), ELBO with per-column losses."""

    type: Literal["tabular_vae"] = "tabular_vae"
    embedding_dim: int = Field(128, ge=1, description="Latent dimension.")
    compress_dims: list[int] = Field(default_factory=lambda: [128, 128], description="Encoder layer widths.")
    decompress_dims: list[int] = Field(
        default_factory=lambda: [128, 128], description="Decoder layer widths."
    )
    loss_factor: float = Field(
        2.0, gt=0, description="Weight of the reconstruction term against the KL term."
    )
    condition_on: list[str] = Field(
        default_factory=list,
        description="Categorical columns the decoder also reads (a conditional VAE): sampling draws "
        "their levels at the training frequencies, or takes an asked value without rejection.",
    )
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(1e-5, ge=0, description="Weight decay.")


ModelConfig = Annotated[
    GPTModelConfig
    | HFCausalLMConfig
    | TabularGANConfig
    | TabularVAEConfig
    | ImageGANConfig
    | ImageVAEConfig
    | SeriesGANConfig
    | SeriesVAEConfig,
    Field(discriminator="type"),
]
