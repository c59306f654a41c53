"""``python -m md_framework`` is the same as the ``md`` command."""

import sys

from md_framework.cli import main

sys.exit(main())
