"""``python -m modeldeploy.demo``: what ``make demo`` runs."""

from __future__ import annotations

import sys

from modeldeploy.demo.run import main

if __name__ == "__main__":
    sys.exit(main())
