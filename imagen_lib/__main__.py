"""`python -m imagen_lib COMMAND`: the command line, in imagen_lib/tools/cli.py."""

import sys

from imagen_lib.tools.cli import main

sys.exit(main())
