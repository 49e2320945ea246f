"""The backbone libraries (timm, open_clip, transformers: the optional extra ``backbones``) are
imported only when a foundation backbone is built, never when the extraction side is
imported (``rulstm-extract`` with torchvision/BN-Inception works without the extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_extraction_side_imports_no_backbone_library() -> None:
    code = (
        "import sys\n"
        "import feature_extraction, feature_extraction.cli, feature_extraction.foundation\n"
        "import feature_extraction.foundation_loaders, feature_extraction.streaming\n"
        "loaded = [m for m in ('timm', 'open_clip', 'transformers') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
