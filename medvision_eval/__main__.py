"""``python -m medvision_eval`` is the ``medvision-eval`` command."""

from .cli import main

raise SystemExit(main())
