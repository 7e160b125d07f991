"""``python -m autoid_lib.cli``: the same as the ``autoid`` command."""

import sys

from autoid_lib.cli.main import main

sys.exit(main())
