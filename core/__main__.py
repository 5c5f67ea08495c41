"""`python -m core ...`: EmbedLab's command line (see core/cli.py)."""
from .cli import main

raise SystemExit(main())
