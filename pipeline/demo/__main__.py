"""`python -m pipeline.demo --out DIR [--seed N] ...`: the demo corpus (see pipeline.demo.corpus)."""
import sys

from pipeline.demo.corpus import main

sys.exit(main())
