import sys
from pathlib import Path

# tests/reference.py, the independent implementation the tests compare against.
sys.path.insert(0, str(Path(__file__).parent))
