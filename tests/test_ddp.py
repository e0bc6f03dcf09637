"""The DPOTrainer and SFT under ``torchrun`` with 2 CPU processes (gloo) equal one process on the same global batch.

Each test starts ``torchrun --standalone --nproc_per_node=2`` on this file; each rank trains the same tiny Llama
on the same rows (DDP splits every batch of 5 rows 3 + 2) and prints its weights' fingerprint. Rank r is given
the output folder ``rank{r}`` so that the file system shows which ranks wrote: only rank 0's may exist.
SFT runs through the command line (``dpo_teach sft``), which is where SFT's model is saved; its rows have
completions of different lengths, so the two ranks' slices hold different numbers of tokens and only a loss
normalised by the global token count (not by rows) gives the single-process gradient.

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

import pytest
import torch
from fast_path_fixtures import tiny_model
from safetensors.torch import load_file
from trainer_fixtures import word_tokenizer

from dpo_teach import cli
from dpo_teach.models import load_causal_lm
from dpo_teach.trainers import sft as sft_module
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


def sft_rows(n: int = 10) -> list[dict]:
    return [{"prompt": f"the film {'was ' * (i % 3)}:", "completion": f" {WORDS[i % 7]} good" + " film" * (i % 4)}
            for i in range(n)]  # fmt: skip


SFT_ARGS = ["--batch-size", "5", "--epochs", "2", "--lr", "1e-3", "--warmup-steps", "1", "--quiet"]


def sft_cli(model_dir: Path, data: Path, out: Path) -> tuple[torch.nn.Module, list[dict]]:
    """``dpo_teach sft`` on ``data`` from ``model_dir`` into ``out``: 4 steps on batches of 5 rows; returns
    the trained model and its history (recorded from the train_sft call the command makes)."""
    seen = {}
    original = sft_module.train_sft

    def recording(model, *args, **kwargs):
        seen["model"], seen["history"] = model, original(model, *args, **kwargs)
        return seen["history"]

    sft_module.train_sft = recording
    try:
        argv = ["sft", "--model", str(model_dir), "--data", str(data), "--out", str(out), *SFT_ARGS]
        assert cli.main(argv) == 0
    finally:
        sft_module.train_sft = original
    return seen["model"], seen["history"]


def torchrun(task: str, tmp_path: Path) -> dict:
    """Run this file's ``task`` on 2 CPU processes; returns each rank's printed JSON, by rank."""
    here = Path(__file__).resolve()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(here),
           task, str(tmp_path)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=here.parent, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = {
        r["rank"]: r
        for r in map(json.loads, (line for line in done.stdout.splitlines() if line.startswith("{")))
    }
    assert sorted(ranks) == [0, 1]
    return ranks


def test_two_processes_equal_one(tmp_path):
    ranks = torchrun("dpo", tmp_path)
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


def test_sft_two_processes_equal_one(tmp_path):
    model_dir, data = tmp_path / "model", tmp_path / "rows.json"
    tiny_model("llama", seed=0).save_pretrained(model_dir)
    word_tokenizer().save_pretrained(model_dir)
    data.write_text(json.dumps(sft_rows()))
    ranks = torchrun("sft", tmp_path)
    model, history = sft_cli(model_dir, data, tmp_path / "single")
    assert len(history) == 4
    weights = load_file(tmp_path / "rank0" / "model.safetensors")
    for name, p in model.state_dict().items():
        if name in weights:
            torch.testing.assert_close(weights[name], p, rtol=0, atol=1e-6, msg=name)
    moved = load_causal_lm(model_dir, device="cpu")[0].state_dict()
    assert max(float((weights[n] - moved[n]).abs().max()) for n in weights) > 1e-3  # training changed them
    for r in (0, 1):  # rank 1's weights equal too (it prints them, it writes nothing)
        for name, total in fingerprint(model).items():
            assert abs(ranks[r]["weights"][name] - total) < 1e-4, (r, name)
        for key in ("loss", "num_tokens"):  # the global batch's mean loss and token count
            torch.testing.assert_close(torch.tensor([h[key] for h in ranks[r]["history"]]),
                                       torch.tensor([h[key] for h in history]), rtol=0, atol=1e-6)  # fmt: skip
    assert not (tmp_path / "rank1").exists()


@pytest.mark.parametrize("batch_size", [1, 2])  # last batches of 1 row
def test_sft_batch_smaller_than_processes_is_refused(monkeypatch, batch_size):
    monkeypatch.setenv("WORLD_SIZE", "2")  # checked before the process group is joined
    rows = [{"prompt": "the film :", "completion": " good"}] * 3
    with pytest.raises(
        ValueError, match="micro-batch of 1 rows cannot be split over 2 processes; use batch_size"
    ):
        sft_module.train_sft(
            tiny_model("llama"), word_tokenizer(), rows, batch_size=batch_size, progress=False
        )


if __name__ == "__main__":  # one rank of the torchrun above: ``this_file.py dpo|sft TMP``
    rank, task, tmp = int(os.environ["RANK"]), sys.argv[1], Path(sys.argv[2])
    if task == "dpo":
        model, history = train(tmp / f"rank{rank}")
    else:
        model, history = sft_cli(tmp / "model", tmp / "rows.json", tmp / f"rank{rank}")
    print(json.dumps({"rank": rank, "weights": fingerprint(model), "history": history}))
