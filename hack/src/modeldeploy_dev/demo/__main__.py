"""``python -m modeldeploy_dev.demo``: what ``make demo`` runs."""

from __future__ import annotations

import sys

from modeldeploy_dev.demo.run import main

if __name__ == "__main__":
    sys.exit(main())
