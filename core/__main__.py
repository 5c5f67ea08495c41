"""`python -m core ...`: EmbedLab's command line (see core/cli/)."""
from .cli import main

raise SystemExit(main())
