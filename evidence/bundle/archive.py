"""The inner evidence bundle as one zip: the same members always give the same bytes.

Shared by the service, which zips the bundles it builds (api.bundle.export), and the officer's
client, which zips a bundle it completed with the audio it decrypted itself (zero-knowledge mode,
evidence.bundle.completion): both must give byte-identical layouts.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def inner_zip(members: Mapping[str, bytes]) -> bytes:
    """The members as one zip, in path order, with fixed times: same members, same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            # FLAC is already compressed; deflating it again costs time for nothing.
            info.compress_type = zipfile.ZIP_STORED if name.endswith(".flac") else zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, members[name])
    return buffer.getvalue()
