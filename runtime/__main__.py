"""``python -m edgemeta.runtime``: the same as ``edgemeta-runtime``."""

import sys

from edgemeta.runtime.cli import main

sys.exit(main())
