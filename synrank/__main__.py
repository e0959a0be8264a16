"""`python -m synrank`: the synrank command line (synrank.cli)."""

import sys

from synrank.cli import main

sys.exit(main())
