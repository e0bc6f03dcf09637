"""The DPOTrainer under ``torchrun`` with 2 CPU processes (gloo) equals one process on the same global batch.

The test starts ``torchrun --standalone --nproc_per_node=2`` on this file; each rank trains the same tiny Llama
on the same rows (DDP splits every batch of 5 pairs 3 + 2) and prints its weights' fingerprint. Rank r is given
the output folder ``rank{r}`` so that the file system shows which ranks wrote: only rank 0's may exist.

A Llama, not a GPT-2: GPT-2's key bias has an exactly-zero gradient in exact arithmetic (a constant added to every
score), so its float gradient is rounding noise whose sign AdamW turns into ±lr steps that differ between any two
summation orders; a model without biases compares to 1e-6.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from fast_path_fixtures import tiny_model
from safetensors.torch import load_file
from trainer_fixtures import word_tokenizer

from dpo_teach.trainers.dpo import DPOTrainer

WORDS = ["good", "bad", "great", "awful", "fine", "film", "was"]


def rows(n: int = 10) -> list[dict]:
    return [{"prompt": f"the film {'was ' * (i % 3)}:", "chosen": f" {WORDS[i % 7]} good",
             "rejected": f" {WORDS[(3 * i + 1) % 7]} bad awful" * (1 + i % 2)} for i in range(n)]  # fmt: skip


def train(output_dir: Path):
    """4 AdamW steps on batches of 5 pairs, a checkpoint every 2 steps; returns (model, history)."""
    tokenizer = word_tokenizer()
    model = tiny_model("llama", seed=0)
    trainer = DPOTrainer(model, tokenizer, rows(), beta=0.5, lr=1e-3, epochs=2, batch_size=5, save_steps=2,
                         output_dir=str(output_dir), device="cpu", progress=False)  # fmt: skip
    return model, trainer.train()


def fingerprint(model) -> dict:
    return {name: float(p.detach().double().sum()) for name, p in model.named_parameters()}


def test_two_processes_equal_one(tmp_path):
    here = Path(__file__).resolve()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(here),
        str(tmp_path),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=here.parent, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = {
        r["rank"]: r
        for r in map(json.loads, (line for line in done.stdout.splitlines() if line.startswith("{")))
    }
    assert sorted(ranks) == [0, 1]
    model, history = train(tmp_path / "single")
    weights = load_file(tmp_path / "rank0" / "model.safetensors")
    for name, p in model.state_dict().items():
        if name in weights:
            torch.testing.assert_close(weights[name], p, rtol=0, atol=1e-6, msg=name)
    moved = tiny_model("llama", seed=0).state_dict()
    assert max(float((weights[n] - moved[n]).abs().max()) for n in weights) > 1e-3  # training changed them
    for r in (0, 1):  # rank 1's weights equal too (it prints them, it writes nothing)
        for name, total in fingerprint(model).items():
            assert abs(ranks[r]["weights"][name] - total) < 1e-4, (r, name)
        losses = [h["loss"] for h in ranks[r]["history"]]
        torch.testing.assert_close(
            torch.tensor(losses), torch.tensor([h["loss"] for h in history]), rtol=0, atol=1e-6
        )
    assert sorted(p.name for p in (tmp_path / "rank0").glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    assert not (tmp_path / "rank1").exists()


if __name__ == "__main__":  # one rank of the torchrun above
    rank = int(os.environ["RANK"])
    model, history = train(Path(sys.argv[1]) / f"rank{rank}")
    print(json.dumps({"rank": rank, "weights": fingerprint(model), "history": history}))
