"""DDP through torchrun: two CPU processes (gloo) train one model together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from genloom.models.tokenizer import TokenizerConfig, train_tokenizer
from genloom.models.tokens import pack_tokens

SCRIPT = """
import sys
from pathlib import Path
from genloom.train.config import TrainConfig
from genloom.train.loop import train
cfg = TrainConfig.model_validate_json(sys.argv[1])
m = train(cfg, Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
Path(sys.argv[4], f"rank_metrics_{__import__('os').environ['RANK']}.json").write_text(__import__('json').dumps(m))
"""


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path: Path) -> None:
    docs = [f"document number {i} says hello to the world. " * 4 for i in range(200)]
    tok = train_tokenizer(iter(docs), TokenizerConfig(kind="char"))
    out = tmp_path / "model"
    out.mkdir()
    tok.save(str(out / "tokenizer.json"))
    pack_tokens(tok, docs[:180], tmp_path / "train.bin")
    pack_tokens(tok, docs[180:], tmp_path / "val.bin")
    from genloom.train.config import TrainConfig

    cfg = TrainConfig(
        model={"type": "gpt", "preset": "tiny", "block_size": 32},
        max_steps=12,
        batch_size=4,
        precision="fp32",
    )
    (tmp_path / "run.py").write_text(SCRIPT)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(tmp_path / "run.py"),
        cfg.model_dump_json(),
        str(tmp_path / "train.bin"),
        str(tmp_path / "val.bin"),
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m0 = json.loads((out / "rank_metrics_0.json").read_text())
    m1 = json.loads((out / "rank_metrics_1.json").read_text())
    assert m0["world_size"] == 2 and m0["tokens"] == 12 * 4 * 32 * 2  # both ranks' batches count
    assert m0["val_loss"] == pytest.approx(m1["val_loss"])  # the replicas stayed identical
    assert (out / "model.safetensors").exists()
