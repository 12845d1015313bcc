"""Where the package's data and the repository are, for every module whatever its subpackage."""
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
# the checkout when the package runs from one (an installed wheel has no repository above it)
REPO_ROOT = PACKAGE_DIR.parent
SCHEMAS_DIR = PACKAGE_DIR / "schemas"
