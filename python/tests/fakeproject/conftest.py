import os
import sys

# The runtime is imported (and libmemtrack.so loaded) at collection, as ttnn is.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fake_runtime  # noqa: E402,F401
