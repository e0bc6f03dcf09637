"""Where a training run's time goes: ``torch.profiler`` over one ``train()`` of a trainer on a bench shape.

Uses the shapes and trainers of ``bench_vs_trl.py`` (same model, pairs, batch, β). Prints the CPU time by
operator (self time, top ``--top``) and the share of the run spent inside torch operators at all — the rest is
Python: the trainer's loop, the model's module calls, data collation.

    python benchmarks/profile_step.py --shape tiny --trainer auto
    python benchmarks/profile_step.py --shape gpt2 --trainer trl --pairs 8
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
import warnings

import bench_vs_trl as B
from torch.profiler import ProfilerActivity, profile


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=list(B.SHAPES), default="tiny")
    parser.add_argument("--trainer", choices=list(B.TRAINERS), default="auto")
    parser.add_argument("--pairs", type=int, default=None, help="fewer pairs than the shape's (faster)")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    B.hf_logging.set_verbosity_error()
    shape = B.SHAPES[args.shape]
    if args.pairs:
        shape = dataclasses.replace(shape, pairs=args.pairs)
    opts = argparse.Namespace(beta=0.1, lr=1e-4)
    tokenizer = B.word_tokenizer(shape.words)
    rows = B.make_pairs(shape, seed=0)
    with tempfile.TemporaryDirectory() as out:
        B.time_train(B.build(args.trainer, shape, tokenizer, rows[: shape.batch_size], opts, out))  # warm-up
        trainer = B.build(args.trainer, shape, tokenizer, rows, opts, out)
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            trainer.train()
        total = time.perf_counter() - start  # wall: the profiler's operator times are wall-clock intervals
    events = prof.key_averages()
    in_ops = sum(e.self_cpu_time_total for e in events) / 1e6
    print(f"{B.TRAINERS[args.trainer]} on {args.shape} ({shape.pairs} pairs): {total:.2f} s wall under the "
          f"profiler, {in_ops:.2f} s ({in_ops / total:.0%}) inside torch operators")  # fmt: skip
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=40))


if __name__ == "__main__":
    main()
