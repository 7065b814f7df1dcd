"""`python -m lookahead.eval`: the eval harness (see harness.py)."""
from .harness import main

main()
