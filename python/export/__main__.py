"""`python -m export HF_DIR OUT_DIR` (run from python/)."""

import sys

from .export import main

sys.exit(main())
