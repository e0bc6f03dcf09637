"""DPO on a GPT-2-124M-shaped model (random init, no download) in bf16 on CUDA: tokens/s and MFU.

The policy and the reference are two copies of a ``GPT2LMHeadModel`` with GPT-2 small's shape (12 layers,
768 wide, 12 heads, 50,257-token vocabulary; N ≈ 124 M parameters). Data are random word sequences (the
numbers do not depend on what the words are). After ``--warmup`` untimed steps, ``--steps`` optimizer steps
of :class:`dpo_teach.trainers.dpo.DPOTrainer` are timed; each step's metrics are read back as Python floats,
so every timed step has finished on the device.

    tokens/s  = (chosen + rejected tokens, padding excluded) / second
    MFU       = (6·N per policy token [forward + backward] + 2·N per reference token [forward]) · tokens/s / peak

The reference forward is counted only when it runs every step (not with ``--precompute``). Attention FLOPs are
left out (the usual 6·N approximation). ``peak`` is the GPU's dense bf16 peak from a table of known GPUs, or
``--peak-tflops``. ``--tiny`` shrinks everything so that the script also runs on a CPU in seconds (a test does
that, so it cannot rot); MFU is then reported only if ``--peak-tflops`` is given.

    python benchmarks/gpu_dpo.py                    # on a CUDA machine
    python benchmarks/gpu_dpo.py --tiny --steps 2   # anywhere
"""

from __future__ import annotations

import argparse
import copy
import datetime
import random
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from dpo_teach.device import describe, get_device
from dpo_teach.models import build_word_tokenizer
from dpo_teach.trainers.dpo import DPOTrainer

# dense bf16 tensor-core peaks, TFLOP/s (vendor data sheets; SXM parts where there are two)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0,
                    "A10": 125.0, "RTX 4090": 165.0, "RTX 3090": 71.0, "V100": 125.0, "T4": 65.0}  # fmt: skip

SHAPES = {
    "gpt2-124m": {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab": 50257, "n_positions": 1024},
    "tiny": {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab": 512, "n_positions": 64},
}


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def make_rows(n: int, words: list[str], prompt_len: int, completion_len: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    text = lambda k: " ".join(rng.choice(words) for _ in range(k))  # noqa: E731
    return [{"prompt": text(prompt_len), "chosen": " " + text(completion_len), "rejected": " " + text(completion_len)}
            for _ in range(n)]  # fmt: skip


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, for a CPU smoke run")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps [default: %(default)s]")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first [default: %(default)s]")
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per step [16; tiny: 8]")
    parser.add_argument("--prompt-len", type=int, default=None, help="prompt tokens [256; tiny: 8] (+BOS)")
    parser.add_argument(
        "--completion-len", type=int, default=None, help="completion tokens [255; tiny: 7] (+EOS)"
    )
    parser.add_argument(
        "--precompute", action="store_true", help="precompute reference log-probs (no ref forward)"
    )
    parser.add_argument("--device", default=None, help="cuda / cpu / mps [default: best available]")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="peak for MFU if the GPU is not in the table"
    )
    args = parser.parse_args(argv)
    shape = SHAPES["tiny" if args.tiny else "gpt2-124m"]
    batch = args.batch_size or (8 if args.tiny else 16)
    prompt_len = args.prompt_len or (8 if args.tiny else 256)
    completion_len = args.completion_len or (7 if args.tiny else 255)
    device = get_device(args.device)

    words = [f"w{i}" for i in range(shape["vocab"] - 4)]  # + 4 special tokens = the vocabulary size
    tokenizer = build_word_tokenizer(words, model_max_length=shape["n_positions"])
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=shape["n_positions"], n_embd=shape["n_embd"],
                        n_layer=shape["n_layer"], n_head=shape["n_head"], resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, pad_token_id=0, bos_token_id=1, eos_token_id=2)  # fmt: skip
    torch.manual_seed(0)
    policy = GPT2LMHeadModel(config)
    reference = copy.deepcopy(policy)
    n_params = sum(p.numel() for p in policy.parameters())
    rows = make_rows(batch * (args.warmup + args.steps), words, prompt_len, completion_len, seed=0)

    stamps: list[float] = []
    trainer = DPOTrainer(policy, tokenizer, rows, ref_model=reference, beta=0.1, lr=1e-5, batch_size=batch, epochs=1,
                         precompute_ref_logps=args.precompute, device=str(device), progress=False,
                         callback=lambda m: stamps.append(time.perf_counter()))  # fmt: skip
    history = trainer.train()
    seconds = stamps[-1] - stamps[args.warmup - 1] if args.warmup else stamps[-1] - stamps[0]
    timed = history[args.warmup :] if args.warmup else history[1:]
    tokens_per_pair = 2 * (
        1 + prompt_len + completion_len + 1
    )  # BOS, prompt, completion, EOS; chosen + rejected
    tokens = tokens_per_pair * batch * len(timed)
    flops_per_token = 6 * n_params + (0 if args.precompute else 2 * n_params)
    peak = peak_tflops(device, args.peak_tflops)
    result = {
        "device": describe(device),
        "params": n_params,
        "tokens_per_s": tokens / seconds,
        "pairs_per_s": batch * len(timed) / seconds,
        "mfu": flops_per_token * tokens / seconds / (peak * 1e12) if peak else None,
        "first_loss": history[0]["loss"],
        "last_loss": history[-1]["loss"],
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }
    print(f"{datetime.date.today()}  {result['device']}")
    print(f"model: {'tiny' if args.tiny else 'GPT-2 124M shape'}, N = {n_params / 1e6:.1f} M parameters; batch {batch} "
          f"pairs × {tokens_per_pair // 2} tokens each side; reference {'precomputed' if args.precompute else 'live'}")  # fmt: skip
    print(f"timed {len(timed)} steps in {seconds:.2f} s: {result['tokens_per_s']:,.0f} tokens/s, "
          f"{result['pairs_per_s']:.1f} pairs/s")  # fmt: skip
    mfu = (
        f"{100 * result['mfu']:.1f} % of {peak:g} TFLOP/s bf16 peak"
        if peak
        else "n/a (no known peak; pass --peak-tflops)"
    )
    print(f"model FLOPs utilisation: {mfu}")
    if result["peak_memory_gib"] is not None:
        print(f"peak GPU memory: {result['peak_memory_gib']:.1f} GiB")
    print(
        f"loss: first step {result['first_loss']:.4f} (log 2 = 0.6931: policy = reference), last {result['last_loss']:.4f}"
    )
    return result


if __name__ == "__main__":
    run()
