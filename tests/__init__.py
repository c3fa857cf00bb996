"""deploybot's tests. Imported before conftest and before moto, so settings here apply to moto too."""

import os
import tempfile

# moto's request recorder picks its file when moto is imported: keep it out of the working tree.
os.environ.setdefault(
    "MOTO_RECORDER_FILEPATH", os.path.join(tempfile.mkdtemp(prefix="moto-rec-"), "recording")
)
