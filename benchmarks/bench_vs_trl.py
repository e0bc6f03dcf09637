"""Throughput of dpo_teach's DPOTrainer against TRL's DPOTrainer, side by side in one run, on two shapes.

Shapes: ``tiny`` — the book's (2 × 64 GPT-2, 205-token vocabulary, 3–8-word prompts, 2–12-word responses,
512 pairs, batch 32); ``gpt2`` — GPT-2-sized vocabulary and lengths (4 × 256 GPT-2, 50,257-token vocabulary,
64–128-token prompts, 24–72-token responses, 32 pairs, batch 8). Both trainers get the same random-init model
(built from a config), the same pairs, batch, β, AdamW and learning rate, a live reference model, CPU, one epoch.
TRL runs with its defaults (gradient checkpointing included); dpo_teach with its default ``forward_mode``
("auto": the shared prompt once, logits at response positions only) and with ``forward_mode="plain"``.

Printed per shape: the first-batch loss of each trainer on the same batch (before any step), pairs/s of
``train()`` (best of ``--repeats`` interleaved runs after a warm-up; by wall clock and by this process's CPU
time), the ratio to TRL, and — from the model's shape — model FLOPs per pair (the arithmetic the DPO loss
requires: prompt once, head at response positions; see :func:`model_flops_per_pair`), the achieved model FLOP/s
and MFU against the dense float32 matmul peak per CPU second measured at the start of the same run. For the
``gpt2`` shape also each trainer's peak resident memory during ``train()`` on one batch, in a fresh subprocess.

    python benchmarks/bench_vs_trl.py                 # make bench: both shapes
    python benchmarks/bench_vs_trl.py --shape gpt2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel, PrinterCallback
from transformers.utils import logging as hf_logging

from dpo_teach.trainers.dpo import DPOTrainer


@dataclass(frozen=True)
class Shape:
    words: int  # vocabulary = words + 4 special tokens
    n_layer: int
    n_embd: int
    prompt: tuple[int, int]  # words per prompt (min, max), before its ':'
    response: tuple[int, int]
    pairs: int
    batch_size: int
    memory: bool


SHAPES = {
    "tiny": Shape(words=201, n_layer=2, n_embd=64, prompt=(3, 8), response=(2, 12), pairs=512, batch_size=32,
                  memory=False),
    "gpt2": Shape(words=50_253, n_layer=4, n_embd=256, prompt=(63, 127), response=(24, 72), pairs=32,
                  batch_size=8, memory=True),
}  # fmt: skip
TRAINERS = {
    "trl": "TRL DPOTrainer (its defaults)",
    "plain": "dpo_teach, forward_mode='plain'",
    "auto": "dpo_teach DPOTrainer (default 'auto')",
}


def word_tokenizer(n_words: int):
    """dpo_teach's word-level tokenizer (``<pad>``, ``<bos>``, ``<eos>``, ``<unk>`` + words ``w0``..., ``:``).

    Built here with ``tokenizers`` directly, as :func:`dpo_teach.models.build_word_tokenizer` builds it,
    because that function's input checks are slow for a 50k-word list.
    """
    from tokenizers import Tokenizer, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {t: i for i, t in enumerate([*specials, *(f"w{i}" for i in range(n_words - 1)), ":"])}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>", model_max_length=1024)  # fmt: skip


def make_pairs(shape: Shape, seed: int) -> list[dict]:
    """``shape.pairs`` rows: a prompt ending in ':' and two different completions, lengths drawn uniformly."""
    rng = random.Random(seed)
    words = lambda lo_hi: " ".join(f"w{rng.randrange(shape.words - 1)}" for _ in range(rng.randint(*lo_hi)))  # noqa: E731
    return [{"prompt": words(shape.prompt) + " :", "chosen": " " + words(shape.response),
             "rejected": " " + words(shape.response)} for _ in range(shape.pairs)]  # fmt: skip


def n_positions(shape: Shape) -> int:
    return 2 + shape.prompt[1] + shape.response[1] + 1  # BOS, prompt, ':', response, EOS


def make_model(shape: Shape, tokenizer, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=n_positions(shape), n_embd=shape.n_embd, n_layer=shape.n_layer,
        n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def trl_trainer(policy, reference, tokenizer, rows, args, batch_size, out_dir):
    from trl import DPOConfig
    from trl import DPOTrainer as TRLDPOTrainer

    config = DPOConfig(
        output_dir=out_dir, report_to=[], per_device_train_batch_size=batch_size, learning_rate=args.lr,
        beta=args.beta, num_train_epochs=1, lr_scheduler_type="constant", max_grad_norm=1.0, weight_decay=0.0,
        logging_steps=1, save_strategy="no", use_cpu=True, bf16=False, disable_tqdm=True, seed=0,
        dataloader_num_workers=0,
    )  # fmt: skip
    trainer = TRLDPOTrainer(model=policy, ref_model=reference, args=config, train_dataset=Dataset.from_list(rows),
                            processing_class=tokenizer)  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # it prints every log line when tqdm is off
    return trainer


def ours_trainer(policy, reference, tokenizer, rows, args, batch_size, mode):
    return DPOTrainer(policy, tokenizer, rows, ref_model=reference, beta=args.beta, lr=args.lr, epochs=1,
                      batch_size=batch_size, max_grad_norm=1.0, device="cpu", progress=False,
                      forward_mode=mode)  # fmt: skip


def build(name, shape, tokenizer, rows, args, out_dir):
    models = make_model(shape, tokenizer, 1), make_model(shape, tokenizer, 0)
    if name == "trl":
        return trl_trainer(*models, tokenizer, rows, args, shape.batch_size, out_dir)
    return ours_trainer(*models, tokenizer, rows, args, shape.batch_size, name)


def first_batch_losses(shape, tokenizer, rows, args) -> dict:
    """Each trainer's loss on the first batch, before any step, with its own tokenisation and collation."""
    batch_rows = rows[: shape.batch_size]
    losses = {}
    with tempfile.TemporaryDirectory() as out:
        trl = build("trl", shape, tokenizer, batch_rows, args, out)
        examples = [trl.train_dataset[i] for i in range(len(batch_rows))]
        with torch.no_grad():
            losses["trl"] = float(trl.compute_loss(trl.model.eval(), trl.data_collator(examples)))
    for mode in ("plain", "auto"):
        ours = build(mode, shape, tokenizer, batch_rows, args, None)
        with torch.no_grad():
            losses[mode] = float(ours.compute_loss(ours._batch(ours.train_data, range(len(batch_rows))))[0])
    return losses


def time_train(trainer) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``trainer.train()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    return time.perf_counter() - wall, time.process_time() - cpu


def matmul_peak(n: int = 1024, seconds: float = 3.0) -> float:
    """Dense float32 matmul FLOP/s per CPU second of this process (best of repeated ``n × n @ n × n``).

    The MFU denominator. Measured by CPU time, as the trainers' FLOP/s are, so that time spent waiting for
    other processes on a shared machine counts in neither.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.process_time()
        a @ b
        best = min(best, time.process_time() - t)
    return 2 * n**3 / best


def model_flops_per_pair(shape: Shape, tokenizer, rows) -> tuple[float, float]:
    """Training FLOPs of one pair: (what the DPO loss requires, what a plain unshared step computes).

    Forward FLOPs of a token at position t: 2·P + 4·H·L·(t+1), with P = 12·L·H² matmul weights (attention and
    MLP) and causal attention (QKᵀ and AV over t+1 keys, L layers); the head costs 2·H·V per position where it
    is applied. *Required*: the prompt x once, y_w and y_l after it, the head at the |y_w| + |y_l| scored
    positions. *Plain*: x⊕y_w and x⊕y_l each in full with the head at every position (no padding counted).
    Training = 3 forwards of the policy (forward + backward) + 1 of the reference; mean over the pairs.
    """
    H, L, V = shape.n_embd, shape.n_layer, len(tokenizer)
    body = lambda t0, t1: sum(2 * 12 * L * H * H + 4 * H * L * (t + 1) for t in range(t0, t1))  # noqa: E731
    required = plain = 0.0
    for r in rows:
        x = len(tokenizer(r["prompt"])["input_ids"])
        y_w, y_l = (
            len(tokenizer(r[k], add_special_tokens=False)["input_ids"]) + 1 for k in ("chosen", "rejected")
        )
        required += body(0, x) + body(x, x + y_w) + body(x, x + y_l) + 2 * H * V * (y_w + y_l)
        plain += body(0, x + y_w) + body(0, x + y_l) + 2 * H * V * (2 * x + y_w + y_l)
    return 4 * required / len(rows), 4 * plain / len(rows)


def peak_memory(name: str, shape_name: str, args) -> float:
    """Peak resident MiB added by ``train()`` of trainer ``name`` on one batch, measured in a fresh process."""
    cmd = [sys.executable, __file__, "--shape", shape_name, "--memory-of", name, "--beta", str(args.beta),
           "--lr", str(args.lr)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (the memory measurement needs Linux).")


def measure_memory(name: str, shape: Shape, args) -> None:
    """Child process of :func:`peak_memory`: train on one batch, print peak RSS growth (VmHWM − VmRSS before)."""
    tokenizer = word_tokenizer(shape.words)
    rows = make_pairs(shape, seed=0)[: shape.batch_size]
    with tempfile.TemporaryDirectory() as out:
        trainer = build(name, shape, tokenizer, rows, args, out)
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
        before = _rss_kib("VmRSS")
        trainer.train()
        print(json.dumps({"peak_mib": (_rss_kib("VmHWM") - before) / 1024}))


def run_shape(shape_name: str, args, peak: float) -> None:
    shape = SHAPES[shape_name]
    tokenizer = word_tokenizer(shape.words)
    rows = make_pairs(shape, seed=0)
    losses = first_batch_losses(shape, tokenizer, rows, args)
    if args.verbose:
        print(f"  {shape_name}: first-batch losses {losses}", flush=True)
    times = {name: [] for name in TRAINERS}
    with tempfile.TemporaryDirectory() as out:
        warm_rows = rows[: shape.batch_size]  # first-call costs (lazy imports, allocator) are not timed
        for name in TRAINERS:
            time_train(build(name, shape, tokenizer, warm_rows, args, out))
        for r in range(args.repeats):
            for name in TRAINERS:
                times[name].append(time_train(build(name, shape, tokenizer, rows, args, out)))
                if args.verbose:
                    print(f"  run {r + 1} {name}: {times[name][-1][0]:.1f} s wall, {times[name][-1][1]:.1f} s CPU",
                          flush=True)  # fmt: skip
    memory = {name: peak_memory(name, shape_name, args) for name in TRAINERS} if shape.memory else {}
    flops, plain_flops = model_flops_per_pair(shape, tokenizer, rows)
    wall = {name: shape.pairs / min(w for w, _ in t) for name, t in times.items()}
    cpu = {name: shape.pairs / min(c for _, c in t) for name, t in times.items()}
    spread = {name: max(w for w, _ in t) / min(w for w, _ in t) for name, t in times.items()}
    print(f"\n== {shape_name}: GPT-2 {shape.n_layer} × {shape.n_embd}, vocabulary {len(tokenizer)}, prompts "
          f"{shape.prompt[0] + 1}–{shape.prompt[1] + 1} words, responses {shape.response[0]}–{shape.response[1]}; "
          f"{shape.pairs} pairs, batch {shape.batch_size}, β = {args.beta}; best of {args.repeats} runs")  # fmt: skip
    print("first-batch loss   " + "   ".join(f"{n} {v:.8f}" for n, v in losses.items())
          + f"   max |diff| to TRL {max(abs(v - losses['trl']) for v in losses.values()):.2e}")  # fmt: skip
    print(f"model FLOPs per pair {flops / 1e9:.3f} GFLOP as the loss requires them (prompt once, head at response "
          f"positions; {plain_flops / 1e9:.3f} for a plain unshared step); matmul peak {peak / 1e9:.1f} GFLOP/s "
          "per CPU second; MFU = model FLOPs × pairs/s (CPU) / peak")  # fmt: skip
    head = f"{'':<38} {'pairs/s wall':>12} {'CPU':>8} {'vs TRL wall / CPU':>19} {'GFLOP/s':>8} {'MFU':>6}"
    print(head + (f" {'peak MiB':>9}" if memory else "") + "  max/min wall")
    for name, label in TRAINERS.items():
        ratio = "" if name == "trl" else f"{wall[name] / wall['trl']:.2f}× / {cpu[name] / cpu['trl']:.2f}×"
        achieved = flops * cpu[name]  # CPU time: the fairer clock on a machine shared with other jobs
        line = f"{label:<38} {wall[name]:12.2f} {cpu[name]:8.2f} {ratio:>19} {achieved / 1e9:8.2f} {achieved / peak:6.1%}"
        print(line + (f" {memory[name]:9.0f}" if memory else "") + f"  {spread[name]:.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=[*SHAPES, "both"], default="both")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--verbose", action="store_true", help="print each timed run as it ends")
    parser.add_argument("--memory-of", choices=list(TRAINERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("trl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    import datasets

    datasets.disable_progress_bars()
    if args.memory_of:
        return measure_memory(args.memory_of, SHAPES[args.shape], args)
    peak = matmul_peak()
    print(f"CPU, {torch.get_num_threads()} intra-op thread(s), torch {torch.__version__}; "
          "pairs/s by CPU time is the fairer measure on a loaded machine (wall time includes waiting)")  # fmt: skip
    for shape_name in SHAPES if args.shape == "both" else [args.shape]:
        run_shape(shape_name, args, peak)


if __name__ == "__main__":
    main()
