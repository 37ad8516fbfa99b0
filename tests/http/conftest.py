# tests/ on the path, so these tests share tests/authzen/support.py and tests/server/certs.py
# (this folder cannot be a package: it would be named `http`, like the standard library's).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
