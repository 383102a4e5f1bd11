"""`python -m pollerd` runs the CLI."""

import sys

from pollerd.cli import main

sys.exit(main())
