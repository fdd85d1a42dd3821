"""The ``train:`` section of a pipeline file: torch-free, registered as the ``train`` section so the
pipeline config (``core.config``) builds it without importing the training loop."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from genloom.core.registry import SECTIONS
from genloom.models.config import GPTModelConfig, ModelConfig
from genloom.models.tokenizer import TokenizerConfig


def parse_duration(text: str) -> float:
    """'90s', '5m', '1.5h', '1h30m' -> seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(h|m|s)", text.strip().lower())
    if not parts or "".join(f"{a}{b}" for a, b in parts) != re.sub(r"\s+", "", text.strip().lower()):
        raise ValueError(f"not a duration: {text!r} (use 90s, 5m, 1h30m)")
    return sum(float(a) * {"h": 3600, "m": 60, "s": 1}[b] for a, b in parts)


class ChatConfig(BaseModel):
    """Train on conversations: each record holds a list of ``{role, content}`` messages."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    messages_field: str = Field(
        "text",
        description=(
            "The record field (a column, else a meta key) holding the conversation: a list of"
            " {role: system|user|assistant, content} or its JSON text (the json source's text_field: messages)."
        ),
    )


class DistributedConfig(BaseModel):
    """``train.distributed``: the train stage runs under ``torchrun`` (DDP; gloo on CPU, NCCL on GPUs),
    in several processes of this machine or of several machines; the data stages run once, in
    ``genloom run`` itself, on the first machine (node 0)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nproc_per_node: int = Field(
        1,
        ge=1,
        description=(
            "Training processes on each machine; each trains on its own batch_size rows or windows, so the"
            " global batch is batch_size x grad_accum x nproc_per_node x nnodes. 1 (and nnodes 1): no torchrun."
        ),
    )
    nnodes: int = Field(
        1,
        ge=1,
        description=(
            "Machines that train together. genloom run is node 0 (it runs the data stages and writes the"
            " model); each other machine joins with torchrun --node-rank=1..nnodes-1 (docs/models.md)."
        ),
    )
    rdzv_endpoint: str | None = Field(
        None,
        description=(
            "nnodes > 1: host:port of node 0, reachable from every node, where torchrun's rendezvous"
            " listens (a free port on node 0, e.g. node0.example:29400)."
        ),
    )
    shared_filesystem: bool = Field(
        False,
        description=(
            "nnodes > 1: every node mounts the store folder at the same path (NFS...); the ranks of every"
            " node read the prepared data and the checkpoints there (executor.shared_filesystem of a Ray"
            " executor counts too)."
        ),
    )

    @field_validator("rdzv_endpoint")
    @classmethod
    def _check_endpoint(cls, v: str | None) -> str | None:
        if v is not None:
            host, _, port = v.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"rdzv_endpoint {v!r} is not host:port (e.g. node0.example:29400)")
        return v

    @model_validator(mode="after")
    def _nodes_need_an_endpoint(self) -> DistributedConfig:
        if self.nnodes > 1 and self.rdzv_endpoint is None:
            raise ValueError(
                f"nnodes: {self.nnodes} needs rdzv_endpoint: host:port of node 0 (where genloom run runs),"
                " which every node can reach"
            )
        if self.nnodes == 1 and self.rdzv_endpoint is not None:
            raise ValueError(
                "rdzv_endpoint is for nnodes > 1; one machine rendezvouses on its own (--standalone)"
            )
        return self

    @property
    def world_size(self) -> int:
        """Training processes in all: nproc_per_node x nnodes."""
        return self.nproc_per_node * self.nnodes


@SECTIONS.register("train")
class TrainConfig(BaseModel):
    """The ``train:`` section: what model to train, for how long, and how."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: ModelConfig = Field(
        default_factory=GPTModelConfig,
        description="The model: {type: gpt, ...} or {type: hf_causal_lm, path: ...}.",
    )
    tokenizer: TokenizerConfig = Field(
        default_factory=TokenizerConfig, description="Tokenizer trained on the corpus (gpt only)."
    )
    time_budget: str | None = Field(
        None, description="Wall-clock budget ('5m', '90s'); picks model size, batch and steps that fit."
    )
    max_steps: int | None = Field(
        None,
        ge=1,
        description="Optimizer steps; None: from time_budget, else one pass over the data (50-20000 steps).",
    )
    seed: int = Field(1337, description="Seed of weights, batches and dropout: same seed, same loss curve.")
    batch_size: int | None = Field(
        None, ge=1, description="Sequences per micro-batch (per process); None: chosen from the model size."
    )
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float | None = Field(None, gt=0, description="Peak learning rate; None: chosen from the model width.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final learning rate as a fraction of the peak.")
    optimizer: Literal["adamw", "muon"] = Field(
        "adamw",
        description="adamw; muon: Muon (orthogonalized momentum) for the GPT's hidden matrices, AdamW for the rest.",
    )
    weight_decay: float = Field(0.1, ge=0, description="Decoupled weight decay (matrices only).")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1.")
    beta2: float | None = Field(
        None, gt=0, lt=1, description="AdamW beta2; None: 0.99 for small batches (< 8192 tokens), else 0.95."
    )
    warmup_steps: int | None = Field(
        None, ge=0, description="Linear warmup steps; None: 5% of the steps, at most 200."
    )
    schedule: Literal["cosine", "wsd", "constant"] = Field(
        "cosine",
        description="cosine decay to min_lr; wsd: warmup-stable-decay (linear decay over the last decay_fraction).",
    )
    decay_fraction: float = Field(0.2, gt=0, le=1, description="wsd: fraction of the steps spent decaying.")
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Average the weights over training (e.g. 0.998); evaluations and the saved model use the average.",
    )
    grad_clip: float | None = Field(
        1.0, gt=0, description="Clip the gradient's global norm to this; null: no clipping."
    )
    eval_interval: int | None = Field(
        None, ge=1, description="Evaluate every N steps; None: about 10 times per run."
    )
    eval_tokens: int = Field(
        32768,
        ge=1,
        description="Validation tokens per evaluation (the first N of the val split: deterministic).",
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        description="Stop after this many evaluations without improvement and keep the best weights.",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description=(
            "bf16: autocast matmuls to bfloat16 with float32 weights; auto: bf16 where a short measured"
            " matmul probe finds it at least 1.5x faster than fp32 (a bf16 GPU; AVX-512 BF16, not AVX2-only CPUs)."
        ),
    )
    compile: bool = Field(
        False, description="torch.compile the model (measured: no gain for small CPU models)."
    )
    checkpoint_interval: int | None = Field(
        None, ge=1, description="Checkpoint every N steps; None: at every evaluation."
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads; None: the cores not busy with other work at start."
    )
    log_interval: int = Field(10, ge=1, description="Report progress every N steps.")
    distributed: DistributedConfig | None = Field(
        None,
        description=(
            "Train in several processes under torchrun ({nproc_per_node: 2}, or several machines with nnodes);"
            " the loss curve equals one process with grad_accum multiplied by the number of processes"
            " (the same global batch)."
        ),
    )
    controls: list[str] = Field(
        default_factory=list,
        description=(
            "Record fields (a column, else a meta key) that condition generation: each value becomes a"
            " control token (<|label=1|>) before the record's text, so `genloom generate --controls label=1`"
            " asks for that kind of text. A feature's column works too (sentiment_label from"
            " features: [{type: sentiment}], topic from topics); every control needs a value in some"
            " training record."
        ),
    )

    @field_validator("time_budget")
    @classmethod
    def _check_budget(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    chat: ChatConfig | None = Field(
        None,
        description=(
            "Conversations instead of plain text: each record's messages are written with the chat"
            " template (the GPT: <|user|>...<|end|>; a Hugging Face model: its own chat_template);"
            " exports carry the template."
        ),
    )

    @model_validator(mode="after")
    def _chat_needs_text(self) -> TrainConfig:
        if self.chat is not None and not getattr(self.model, "chat", False):
            raise ValueError(
                f"train.chat needs a text model (type: gpt or hf_causal_lm), not {self.model.type}"
            )
        return self

    @model_validator(mode="after")
    def _controls_need_gpt(self) -> TrainConfig:
        if self.controls and not self.model.trains_tokenizer:
            raise ValueError(
                "train.controls needs a tokenizer genloom trains (type: gpt); a pretrained tokenizer has no control tokens"
            )
        return self

    @model_validator(mode="after")
    def _privacy_needs_fixed_steps(self) -> TrainConfig:
        if getattr(self.model, "privacy", None) is not None and self.time_budget is not None:
            raise ValueError(
                "train.time_budget cannot be used with train.model.privacy: DP-SGD's noise is set from the"
                " number of steps, which a time budget changes during the run; use model.epochs or train.max_steps"
            )
        return self

    @model_validator(mode="after")
    def _muon_needs_gpt(self) -> TrainConfig:
        if self.optimizer == "muon" and not self.model.muon:
            raise ValueError(
                "train.optimizer: muon is for the genloom GPT (type: gpt); use adamw to fine-tune a Hugging Face model"
            )
        return self
