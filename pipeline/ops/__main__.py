"""`python -m pipeline.ops COMMAND`: see cli.py."""

import sys

from pipeline.ops.cli import main

sys.exit(main())
