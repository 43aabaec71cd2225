"""`python -m bot` runs the same command line as `tracbot`."""

import sys

from bot.cli import main

sys.exit(main())
