"""`python -m core` runs the `fbcnn` command line."""
import sys

from core.cli import main

sys.exit(main())
