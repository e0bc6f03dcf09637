"""``python -m dpo_teach sft | dpo | demo`` — the trainers from the command line.

* ``sft``:  SFT a causal LM on ``prompt``/``completion`` rows (``--data`` JSON/JSONL, ``--model`` a local
  directory), or train a world's cached π_ref (``--world``); writes ``--out`` with ``save_pretrained``.
* ``dpo``:  DPO (or any registry loss) on ``prompt``/``chosen``/``rejected`` rows (``--data``), or on pairs
  a world samples from its π_ref and labels by Bradley–Terry (``--world``); writes ``--out``.
* ``demo``: the instructor's demo on the reviews world — π_ref (trained once, then cached), preference pairs,
  DPO, and reviews sampled before and after with their true reward and the KL to π_ref.

``--help`` imports nothing heavy (torch and transformers load only when a command runs), and a bad input
(a missing file, a malformed row, a model folder without weights, a bad option value) is printed as one line
``error: ...`` with exit status 2; only a genuine bug shows a traceback.
"""

from __future__ import annotations

import argparse
import copy
import json
import linecache
import sys
import time
from pathlib import Path

DESCRIPTION = "Train language models with DPO from the command line: SFT, DPO and its variants, and a demo."
#: the names of dpo_teach.losses.LOSSES, listed here so that --help needs no torch (a test keeps them equal)
LOSS_NAMES = ("hinge", "ipo", "kto", "orpo", "robust", "sigmoid", "simpo")
COMMANDS = {
    "sft": "Supervised fine-tuning on prompt/completion rows: makes the reference policy π_ref.",
    "dpo": "DPO, or one of its variant losses, on prompt/chosen/rejected preference pairs.",
    "demo": "The instructor's demo on the reviews world: SFT, pairs, DPO, samples (about a minute on a CPU).",
}


def _world(name: str, seed: int):
    from dpo_teach.worlds.reviews import ReviewsWorld
    from dpo_teach.worlds.sequences import SequenceWorld

    return {"reviews": ReviewsWorld, "sequences": SequenceWorld}[name](seed=seed)


def _reference(args):
    """(model, tokenizer, world or None) from ``--model`` or ``--world``."""
    if args.quiet:  # transformers' own "Loading weights" bars too
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if args.model:
        from dpo_teach.models import load_causal_lm

        model, tokenizer = load_causal_lm(args.model, device="cpu", local_files_only=not args.allow_download)
        return model, tokenizer, None
    from dpo_teach.cache import reference_model

    world = _world(args.world, args.seed)
    model, tokenizer = reference_model(world, device="cpu", progress=not args.quiet)
    return model, tokenizer, world


def cmd_sft(args) -> int:
    from dpo_teach.data import read_rows
    from dpo_teach.distributed import is_main
    from dpo_teach.trainers.checkpoints import check_output_dir
    from dpo_teach.trainers.sft import train_sft

    rows = read_rows(args.data) if args.data else None  # a bad file fails before the model loads
    out = args.out if is_main() else None  # under torchrun only rank 0 writes
    if out:  # a file, an unwritable folder or another run's model: refused before any training
        check_output_dir(out, overwrite=args.overwrite)
    model, tokenizer, world = _reference(args)
    if args.data is None:  # --world: the cached π_ref is the SFT result
        print(f"π_ref of the {world.name} world (SFT on {world.sft_config['n_rows']} demonstrations, cached)")
    else:
        history = train_sft(model, tokenizer, rows, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            warmup_steps=args.warmup_steps, max_length=args.max_length, seed=args.seed,
                            progress=not args.quiet)  # fmt: skip
        print(f"SFT: {len(history)} steps, loss {history[0]['loss']:.4f} → {history[-1]['loss']:.4f}")
    if out:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        print(f"saved to {out}")
    return 0


def cmd_dpo(args) -> int:
    from dpo_teach.data import read_rows
    from dpo_teach.trainers.dpo import DPOTrainer

    rows = read_rows(args.data) if args.data else None  # a bad file fails before the model loads
    reference, tokenizer, world = _reference(args)
    if rows is None:
        rows = world.preference_pairs(reference, n=args.pairs, seed=args.seed)
    policy = copy.deepcopy(reference)
    allowed = world.allowed_token_ids if world is not None else None
    trainer = DPOTrainer(policy, tokenizer, rows, loss_type=args.loss, beta=args.beta, lr=args.lr,
                         epochs=args.epochs, batch_size=args.batch_size, warmup_steps=args.warmup_steps,
                         max_length=args.max_length, precompute_ref_logps=True, allowed_token_ids=allowed,
                         seed=args.seed, output_dir=args.out, overwrite_output_dir=args.overwrite,
                         progress=not args.quiet)  # fmt: skip
    history = trainer.train()
    last = history[-1]
    shown = {k: round(v, 4) for k, v in last.items() if k.startswith(("loss", "rewards/"))}
    print(f"{args.loss}: {len(history)} steps; last step {json.dumps(shown)}")
    if world is not None and hasattr(world, "reward_table"):
        ref_logps = world.logprobs(reference)
        print(
            "exact evaluation:",
            json.dumps({k: round(v, 4) for k, v in world.evaluate(policy, ref_logps, args.beta).items()}),
        )
    if args.out:
        print(f"saved to {args.out}")
    return 0


def _print_samples(title: str, rows) -> None:
    print(title)
    for r in rows:
        print(f"  {r['reward']:+.2f}  {r['prompt']}{r['completion']}")


def cmd_demo(args) -> int:
    from dpo_teach.cache import reference_model
    from dpo_teach.trainers.dpo import train_dpo
    from dpo_teach.worlds.reviews import ReviewsWorld

    start = time.perf_counter()
    world = ReviewsWorld(seed=args.seed)
    print(
        "1/4  π_ref: a tiny GPT-2 after SFT on grammatical reviews of mixed sentiment (cached after the first run)"
    )
    reference, tokenizer = reference_model(world, device="cpu", progress=not args.quiet)
    _print_samples(
        "     reviews sampled from π_ref (true reward = 3 × VADER sentiment):",
        world.samples(reference, 1, seed=1),
    )
    print(
        f"2/4  {args.pairs} preference pairs: two reviews from π_ref per prompt, labelled by Bradley–Terry on the reward"
    )
    pairs = world.preference_pairs(reference, n=args.pairs, seed=args.seed)
    print(f"3/4  DPO, β = {args.beta}: π_θ starts as a copy of π_ref")
    policy = copy.deepcopy(reference)
    history = train_dpo(policy, tokenizer, pairs, beta=args.beta, lr=args.lr, epochs=args.epochs,
                        batch_size=args.batch_size, warmup_steps=10, precompute_ref_logps=True, seed=args.seed,
                        progress=not args.quiet)  # fmt: skip
    acc = sum(h["rewards/accuracies"] for h in history[-5:]) / min(5, len(history))
    print(
        f"     {len(history)} steps; loss {history[0]['loss']:.3f} → {history[-1]['loss']:.3f}, reward accuracy {acc:.2f}"
    )
    _print_samples(
        "4/4  reviews sampled from π_θ after DPO (same prompts, same seed):", world.samples(policy, 1, seed=1)
    )
    before = world.evaluate(reference, reference, n=args.eval_samples, seed=2)
    after = world.evaluate(policy, reference, n=args.eval_samples, seed=2)
    print(f"     expected true reward  {before['expected_reward']:+.3f} → {after['expected_reward']:+.3f}"
          f"  (± {after['expected_reward_se']:.3f})")  # fmt: skip
    print(f"     KL(π_θ ‖ π_ref)        {after['kl_to_ref']:.3f} nats  (± {after['kl_to_ref_se']:.3f})")
    print(f"     grammatical samples   {before['grammatical']:.0%} → {after['grammatical']:.0%}")
    if args.on_policy:
        _on_policy_step(args, world, policy, reference, tokenizer, after)
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


def _on_policy_step(args, world, policy, reference, tokenizer, after) -> None:
    """The demo's optional fifth step: RLOO or GRPO from the DPO policy, against the true reward, KL to π_ref."""
    import torch

    from dpo_teach.trainers.policy_gradient import train_grpo, train_rloo

    train = {"rloo": train_rloo, "grpo": train_grpo}[args.on_policy]

    def reward(prompts, responses):
        return torch.tensor([world.true_reward(p, y) for p, y in zip(prompts, responses, strict=True)])

    print(
        f"5/5  {args.on_policy.upper()} from π_θ against the true reward, KL to the same π_ref (β = {args.beta})"
    )
    train(policy, tokenizer, world.prompts, reward, ref_model=reference, kl_coef=args.beta, steps=20,
          prompts_per_step=16, k=4, lr=3e-4, max_new_tokens=world.max_new_tokens, seed=args.seed,
          progress=not args.quiet)  # fmt: skip
    _print_samples(
        "     reviews sampled after it (same prompts, same seed):", world.samples(policy, 1, seed=1)
    )
    final = world.evaluate(policy, reference, n=args.eval_samples, seed=2)
    print(f"     expected true reward  {after['expected_reward']:+.3f} → {final['expected_reward']:+.3f}"
          f"  (± {final['expected_reward_se']:.3f}); KL(π_θ ‖ π_ref) {final['kl_to_ref']:.3f} nats")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dpo_teach", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{sft,dpo,demo}")

    def add(name):
        return sub.add_parser(name, help=COMMANDS[name], description=COMMANDS[name])

    def common(p, lr, epochs, batch_size):
        source = p.add_mutually_exclusive_group()
        source.add_argument("--world", choices=("reviews", "sequences"), default="sequences",
                            help="use this world's cached π_ref (and its data) [default: %(default)s]")  # fmt: skip
        source.add_argument("--model", help="a local model directory (save_pretrained) or a cached Hub name")
        p.add_argument("--allow-download", action="store_true",
                       help="let --model download from the Hugging Face Hub (offline by default)")  # fmt: skip
        p.add_argument("--lr", type=float, default=lr, help="AdamW learning rate [default: %(default)s]")
        p.add_argument(
            "--epochs", type=int, default=epochs, help="passes over the data [default: %(default)s]"
        )
        p.add_argument(
            "--batch-size", type=int, default=batch_size, help="rows per step [default: %(default)s]"
        )
        p.add_argument(
            "--warmup-steps", type=int, default=0, help="linear warm-up steps [default: %(default)s]"
        )
        p.add_argument("--max-length", type=int, default=None, help="truncate sequences to this many tokens")
        p.add_argument("--out", help="directory to save the trained model and tokenizer to")
        p.add_argument("--overwrite", action="store_true",
                       help="replace another run's model and checkpoints in --out (refused otherwise)")  # fmt: skip
        p.add_argument(
            "--seed", type=int, default=0, help="seed for data order and sampling [default: %(default)s]"
        )
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    sft = add("sft")
    common(sft, 1e-3, 1, 32)
    sft.add_argument("--data", help="JSON/JSONL rows with prompt and completion (default: the world's π_ref)")
    sft.set_defaults(func=cmd_sft)

    dpo = add("dpo")
    common(dpo, 1e-3, 1, 32)
    dpo.add_argument(
        "--data", help="JSON/JSONL rows with prompt, chosen, rejected (default: pairs from --world)"
    )
    dpo.add_argument(
        "--pairs", type=int, default=2000, help="pairs to sample from the world [default: %(default)s]"
    )
    dpo.add_argument(
        "--loss",
        choices=LOSS_NAMES,
        default="sigmoid",
        help="loss ('sigmoid' = DPO) [default: %(default)s]",
    )
    # the same β default as DPOConfig and the demo (tests/test_cli.py checks they agree)
    dpo.add_argument("--beta", type=float, default=0.1, help="β, the KL strength [default: %(default)s]")
    dpo.set_defaults(func=cmd_dpo)

    demo = add("demo")
    demo.add_argument("--pairs", type=int, default=1024, help="preference pairs [default: %(default)s]")
    demo.add_argument("--beta", type=float, default=0.1, help="β [default: %(default)s]")
    demo.add_argument("--lr", type=float, default=3e-3, help="learning rate [default: %(default)s]")
    demo.add_argument("--epochs", type=int, default=2, help="epochs of DPO [default: %(default)s]")
    demo.add_argument("--batch-size", type=int, default=64, help="pairs per step [default: %(default)s]")
    demo.add_argument(
        "--eval-samples",
        type=int,
        default=512,
        help="samples for the reward/KL estimates [default: %(default)s]",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed [default: %(default)s]")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--on-policy", choices=("rloo", "grpo"), default=None,
                      help="after DPO, continue with this on-policy method against the true reward")  # fmt: skip
    demo.set_defaults(func=cmd_demo)
    return parser


_PACKAGE = Path(__file__).resolve().parent


def is_input_error(err: BaseException) -> bool:
    """True for an error that the package's own validation raised on purpose: a ``ValueError``/``TypeError``/
    ``OSError`` (missing file, offline) whose innermost frame is a ``raise`` statement in ``dpo_teach``.

    A bug raises from elsewhere (inside torch, or an unexpected argument in a call), and keeps its traceback.
    """
    if not isinstance(err, (ValueError, TypeError, OSError)) or err.__traceback__ is None:
        return False
    tb = err.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    path = Path(tb.tb_frame.f_code.co_filename).resolve()
    line = linecache.getline(str(path), tb.tb_lineno).strip()
    return path.is_relative_to(_PACKAGE) and line.startswith("raise")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("sft", "dpo") and args.model and not args.data:
        build_parser().error(f"{args.command} --model needs --data (a world's data comes with --world)")
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as err:
        if not is_input_error(err):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
