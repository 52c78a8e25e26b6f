"""`python -m sgpo_engine.serve`: the same as `sgpo serve`."""
import sys

from .cli import main

sys.exit(main())
