"""``python -m modeldeploy_server`` is ``modeldeploy-server``."""

from .cli import main

raise SystemExit(main())
