"""``python -m dpo_teach`` → :func:`dpo_teach.cli.main`."""

import sys

from dpo_teach.cli import main

sys.exit(main())
