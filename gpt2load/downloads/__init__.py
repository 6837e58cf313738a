"""Downloads that resume, retry, prove their bytes and never leave half a file in place.

``download`` fetches a whole release (or a custom manifest) into a folder;
``download_file`` fetches one file. The modules here are their parts: hosts
(mirror rewriting), digests, locks, manifests and the HTTP transfer itself.
"""

from .fetch import (
    WEIGHTS_DIR_ENV,
    ChecksumError,
    DownloadError,
    default_dir,
    download,
    download_file,
    weights_root,
)

__all__ = [
    "WEIGHTS_DIR_ENV",
    "ChecksumError",
    "DownloadError",
    "default_dir",
    "download",
    "download_file",
    "weights_root",
]
