"""`python -m tunekit` is the `tunekit` command (torchrun -m tunekit train ... uses it)."""

import sys

from tunekit.cli import main

sys.exit(main())
