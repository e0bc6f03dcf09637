"""Peak extra memory of ``dpo_teach.logprobs.sequence_logps`` against a naive ``log_softmax`` + ``gather``.

Setting: vocabulary 50,257 (GPT-2), length 512, batch 8, float32 logits (823 MB), every position after the
first labelled as a response token (the worst case for us: no prompt positions to skip).

How it is measured (honestly, on CPU): each variant runs in a *fresh subprocess*. The subprocess allocates and
fills the logits, resets the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs`` resets ``VmHWM``),
records the current RSS, runs the variant (after a warm-up call on a tiny input, so that faulting in
torch's code pages is not counted), and reports ``VmHWM − RSS before`` - the extra resident memory at the
peak, whatever allocator made it. (``tracemalloc`` does not see torch's allocations.) On CUDA the same script
uses ``torch.cuda.reset_peak_memory_stats`` and ``max_memory_allocated`` instead. Two cases: the forward
alone (reference-model log-probs under ``no_grad``) and forward + backward (the policy). In the backward both
methods must produce a ``batch × length × vocab`` gradient for the logits; that tensor is counted.

Run: ``python benchmarks/logps_memory.py`` (add ``--device cuda`` on a GPU). Prints, never asserts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BATCH, LENGTH, VOCAB = 8, 512, 50_257
MB = 2**20


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (this CPU method needs Linux).")


def _naive(logits, labels):
    import torch

    mask = labels[:, 1:] != -100
    per_token = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    per_token = per_token.gather(-1, labels[:, 1:].clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (per_token * mask).sum(-1)


def measure(variant: str, backward: bool, device: str) -> dict:
    """Run one variant in this process and return its peak extra memory in MiB."""
    import torch

    from dpo_teach.logprobs import sequence_logps

    fn = sequence_logps if variant == "ours" else _naive
    warm = torch.randn(2, 8, 16, device=device, requires_grad=backward)  # fault in the code paths first
    with torch.set_grad_enabled(backward):
        out = fn(warm, torch.randint(0, 16, (2, 8), device=device))
        if backward:
            out.sum().backward()
    torch.manual_seed(0)
    logits = torch.randn(BATCH, LENGTH, VOCAB, device=device, requires_grad=backward)
    labels = torch.randint(0, VOCAB, (BATCH, LENGTH), device=device)
    labels[:, 0] = -100
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")
        before = _rss_kb("VmRSS") * 1024
    with torch.set_grad_enabled(backward):
        logps = fn(logits, labels)
        if backward:
            logps.sum().backward()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _rss_kb("VmHWM") * 1024
    return {
        "variant": variant,
        "backward": backward,
        "extra_mib": (peak - before) / MB,
        "logps": logps.tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--one", nargs=2, metavar=("VARIANT", "BACKWARD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # child process: measure one variant and print JSON
        print(json.dumps(measure(args.one[0], args.one[1] == "1", args.device)))
        return

    logits_mib = BATCH * LENGTH * VOCAB * 4 / MB
    print(
        f"sequence_logps peak extra memory, batch {BATCH} × length {LENGTH} × vocab {VOCAB} on {args.device}"
    )
    print(f"(the float32 logits themselves: {logits_mib:.0f} MiB; each variant in a fresh subprocess)\n")
    print(f"{'case':<22}{'naive (MiB)':>14}{'ours (MiB)':>14}{'ours / naive':>15}")
    for backward in (False, True):
        results = {}
        for variant in ("naive", "ours"):
            cmd = [sys.executable, __file__, "--device", args.device, "--one", variant, str(int(backward))]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[variant] = json.loads(out.strip().splitlines()[-1])
        diff = max(
            abs(a - b) for a, b in zip(results["naive"]["logps"], results["ours"]["logps"], strict=True)
        )
        naive, ours = results["naive"]["extra_mib"], results["ours"]["extra_mib"]
        case = "forward + backward" if backward else "forward (no_grad)"
        print(f"{case:<22}{naive:>14.0f}{ours:>14.0f}{ours / naive:>14.2f}×   (max |Δ logps| = {diff:.1e})")
    print("\ngoal: ours ≤ 0.5× naive. The backward includes the logits' gradient (one full tensor) in both.")


if __name__ == "__main__":
    main()
