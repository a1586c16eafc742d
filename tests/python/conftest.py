"""Makes the helper module of this folder importable, in the test process and (through the
``sys.path`` that joblet passes on) in joblet's worker processes."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
