import sys

from synrank.cli import main

sys.exit(main())
