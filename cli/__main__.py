"""`python -m cli`: the synrank command line (cli.main), as the `synrank` console script runs it."""

import sys

from cli.main import main

sys.exit(main())
