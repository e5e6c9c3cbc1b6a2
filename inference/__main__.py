"""``python -m pplx.inference``: the same as the ``pplx`` command."""

import sys

from pplx.inference.cli import main

sys.exit(main())
