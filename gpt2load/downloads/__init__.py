"""Downloads that resume, retry, prove their bytes and never leave half a file in place:
``download`` (fetch.py) a whole release into a folder, ``download_file`` (file.py) one file."""

from ..errors import ChecksumError, DownloadError
from .fetch import WEIGHTS_DIR_ENV, default_dir, download, weights_root
from .file import download_file

__all__ = ["WEIGHTS_DIR_ENV", "ChecksumError", "DownloadError", "default_dir", "download"]
__all__ += ["download_file", "weights_root"]
