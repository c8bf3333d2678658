import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from site_ns import Site  # noqa: E402


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    try:
        yield s
    finally:
        s.close()
