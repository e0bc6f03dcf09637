"""dpo_teach — the package behind an executable textbook on Direct Preference Optimization.

Rafailov, Sharma, Mitchell, Ermon, Manning, Finn (2023), "Direct Preference Optimization:
Your Language Model is Secretly a Reward Model". Every function the book uses lives here;
the notebooks in ``book/`` import it and never copy it.
"""

__version__ = "0.1.0"

from dpo_teach.device import autocast, get_device  # noqa: E402
from dpo_teach.seed import seed_everything  # noqa: E402

__all__ = ["__version__", "autocast", "get_device", "seed_everything"]
