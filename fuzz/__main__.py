"""``python -m fuzz``: a fuzzing campaign (:func:`fuzz.campaign.main`)."""

from __future__ import annotations

import sys

from fuzz.campaign import main

if __name__ == "__main__":
    sys.exit(main())
