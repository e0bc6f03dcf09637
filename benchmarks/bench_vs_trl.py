"""Throughput of dpo_teach's DPOTrainer against TRL's DPOTrainer, side by side in one run.

Same tiny GPT-2 (random init, built from a config), same 512 preference pairs, same batch size, β, optimizer
and learning rate, both with a live reference model (a frozen copy, one no-grad forward per step), CPU.
Prints, for each trainer, the first-batch loss on the same batch (before any step) and pairs/s of ``train()``
(the best of ``--repeats`` interleaved runs, after an untimed warm-up), then the ratio. TRL runs with its
defaults (which include gradient checkpointing) and, for reference, with gradient checkpointing off. ``dpo_teach`` is also
timed with ``precompute_ref_logps=True`` (reference log-probs computed once, then the reference is dropped).

    python benchmarks/bench_vs_trl.py            # make bench
"""

from __future__ import annotations

import argparse
import copy
import logging
import random
import tempfile
import time
import warnings

import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel, PrinterCallback
from transformers.utils import logging as hf_logging

from dpo_teach.models import build_word_tokenizer
from dpo_teach.trainers.dpo import DPOTrainer

WORDS = [f"w{i}" for i in range(200)] + [":"]


def make_pairs(n: int, seed: int) -> list[dict]:
    """``n`` rows: a 3–8 word prompt ending in ':' and two different 2–12 word completions."""
    rng = random.Random(seed)
    words = lambda k: " ".join(rng.choice(WORDS[:-1]) for _ in range(k))  # noqa: E731
    rows = []
    for _ in range(n):
        chosen, rejected = words(rng.randint(2, 12)), words(rng.randint(2, 12))
        rows.append(
            {"prompt": words(rng.randint(3, 8)) + " :", "chosen": " " + chosen, "rejected": " " + rejected}
        )
    return rows


def make_model(tokenizer, seed: int, n_layer: int, n_embd: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=32, n_embd=n_embd, n_layer=n_layer, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def trl_trainer(policy, reference, tokenizer, rows, args, out_dir, gradient_checkpointing=True):
    from trl import DPOConfig
    from trl import DPOTrainer as TRLDPOTrainer

    config = DPOConfig(
        output_dir=out_dir, report_to=[], per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
        beta=args.beta, num_train_epochs=1, lr_scheduler_type="constant", max_grad_norm=1.0, weight_decay=0.0,
        logging_steps=1, save_strategy="no", use_cpu=True, bf16=False, disable_tqdm=True, seed=0,
        dataloader_num_workers=0, gradient_checkpointing=gradient_checkpointing,
    )  # fmt: skip
    trainer = TRLDPOTrainer(model=policy, ref_model=reference, args=config, train_dataset=Dataset.from_list(rows),
                            processing_class=tokenizer)  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # it prints every log line when tqdm is off
    return trainer


def ours_trainer(policy, reference, tokenizer, rows, args, precompute=False):
    return DPOTrainer(policy, tokenizer, rows, ref_model=reference, beta=args.beta, lr=args.lr, epochs=1,
                      batch_size=args.batch_size, max_grad_norm=1.0, precompute_ref_logps=precompute,
                      device="cpu", progress=False)  # fmt: skip


def first_batch_losses(tokenizer, rows, args) -> tuple[float, float]:
    """Both losses on the first ``batch_size`` rows, each trainer with its own tokenisation and collation."""
    batch_rows = rows[: args.batch_size]
    policy = make_model(tokenizer, 1, args.n_layer, args.n_embd)
    reference = make_model(tokenizer, 0, args.n_layer, args.n_embd)
    with tempfile.TemporaryDirectory() as out:
        trl = trl_trainer(copy.deepcopy(policy), copy.deepcopy(reference), tokenizer, batch_rows, args, out)
        examples = [trl.train_dataset[i] for i in range(len(batch_rows))]
        with torch.no_grad():
            theirs = float(trl.compute_loss(trl.model.eval(), trl.data_collator(examples)))
    ours = ours_trainer(policy, reference, tokenizer, batch_rows, args)
    with torch.no_grad():
        loss, _ = ours.compute_loss(ours._batch(ours.train_data, range(len(batch_rows))))
    return float(loss), theirs


def time_train(build) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``build().train()``."""
    trainer = build()
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("trl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    import datasets

    datasets.disable_progress_bars()

    tokenizer = build_word_tokenizer(WORDS)
    rows = make_pairs(args.pairs, seed=0)
    ours_loss, trl_loss = first_batch_losses(tokenizer, rows, args)

    def fresh():
        return make_model(tokenizer, 1, args.n_layer, args.n_embd), make_model(
            tokenizer, 0, args.n_layer, args.n_embd
        )

    times = {"trl": [], "trl_no_gc": [], "ours": [], "ours_pre": []}
    with tempfile.TemporaryDirectory() as out:
        builders = {
            "trl": lambda: trl_trainer(*fresh(), tokenizer, rows, args, out),
            "trl_no_gc": lambda: trl_trainer(
                *fresh(), tokenizer, rows, args, out, gradient_checkpointing=False
            ),
            "ours": lambda: ours_trainer(*fresh(), tokenizer, rows, args),
            "ours_pre": lambda: ours_trainer(*fresh(), tokenizer, rows, args, precompute=True),
        }
        for build in builders.values():  # warm-up: first-call costs (lazy imports, allocator) are not timed
            time_train(build)
        for _ in range(args.repeats):
            for name, build in builders.items():
                times[name].append(time_train(build))
    wall = {name: args.pairs / min(w for w, _ in t) for name, t in times.items()}
    cpu = {name: args.pairs / min(c for _, c in t) for name, t in times.items()}
    print(f"tiny GPT-2 ({args.n_layer} layers, {args.n_embd} wide), {args.pairs} pairs, batch {args.batch_size}, "
          f"β = {args.beta}, CPU, {torch.get_num_threads()} threads; best of {args.repeats} runs of train()")  # fmt: skip
    print(
        f"first-batch loss   dpo_teach {ours_loss:.8f}   TRL {trl_loss:.8f}   |diff| {abs(ours_loss - trl_loss):.2e}"
    )
    print(f"{'':<36} {'pairs/s (wall)':>14}  {'pairs/s (CPU time)':>18}     vs TRL defaults (wall / CPU)")
    labels = {
        "trl": "TRL DPOTrainer (its defaults)",
        "trl_no_gc": "TRL, gradient_checkpointing=False",
        "ours": "dpo_teach DPOTrainer",
        "ours_pre": "dpo_teach, precompute_ref_logps",
    }
    for name, label in labels.items():
        ratio = (
            ""
            if name.startswith("trl")
            else f"{wall[name] / wall['trl']:.2f}× / {cpu[name] / cpu['trl']:.2f}× TRL"
        )
        print(f"{label:<36} {wall[name]:14.1f}  {cpu[name]:18.1f}     {ratio}")
    print(
        "(CPU time is the fairer measure on a loaded machine: wall time includes waiting for other processes.)"
    )


if __name__ == "__main__":
    main()
