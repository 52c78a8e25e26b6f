"""`python -m sgpo_engine.serve`: the same as `sgpo serve`."""
import sys

from .http import main

sys.exit(main())
