"""``python -m poseseg`` (and ``torchrun -m poseseg``) is the ``poseseg`` command."""
import sys

from poseseg.cli import main

sys.exit(main())
