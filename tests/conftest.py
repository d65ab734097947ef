"""Shared fixtures: tiny models built once per session, and the tests/ folder on sys.path."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
