"""dpo_teach — the package behind an executable textbook on Direct Preference Optimization.

Rafailov, Sharma, Mitchell, Ermon, Manning, Finn (2023), "Direct Preference Optimization:
Your Language Model is Secretly a Reward Model". Every function the book uses lives here;
the notebooks in ``book/`` import it and never copy it.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "autocast", "get_device", "seed_everything"]

# Imported on first use (PEP 562), so that `python -m dpo_teach --help` answers without loading torch.
_LAZY = {
    "autocast": "dpo_teach.device",
    "get_device": "dpo_teach.device",
    "seed_everything": "dpo_teach.seed",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dpo_teach' has no attribute {name!r}")
