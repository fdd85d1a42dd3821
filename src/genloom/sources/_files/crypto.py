"""Password-protected Office files: OOXML packages inside an OLE2 ``EncryptedPackage``."""

from __future__ import annotations

import io
from pathlib import Path

from genloom.core.errors import RecordError
from genloom.sources._files.blob import Blob, copy_to_temp

#: the root stream of an encrypted OOXML package ([MS-OFFCRYPTO] 2.3.4.4): what detection looks for
ENCRYPTED_PACKAGE_STREAM = "EncryptedPackage"
#: the detected format of such a file, decrypted with the source's passwords before it is read
ENCRYPTED_OOXML = "encrypted_ooxml"


def decrypt_office(blob: Blob, passwords: list[str]) -> Path:
    """Decrypt an OOXML file in an OLE2 ``EncryptedPackage`` (Agile or Standard encryption) with
    the first password that opens it; the plain package is written to a temporary file (the caller
    deletes it).

    RecordError ``wrong_password`` when none opens it, ``encrypted`` when the encryption is not
    password-based (IRM/DRM) or not supported, ``missing_dependency`` without msoffcrypto-tool.
    """
    try:
        import msoffcrypto
        from msoffcrypto.exceptions import DecryptionError, FileFormatError, InvalidKeyError, ParseError
    except ImportError as e:
        raise RecordError(
            "missing_dependency",
            "msoffcrypto-tool decrypts password-protected Office files: pip install 'genloom[docs]'",
        ) from e
    data = blob.read_bytes()
    passwords = [p for p in passwords if p]  # Office has no empty password (PDF has)
    for password in passwords:
        try:
            office = msoffcrypto.OfficeFile(io.BytesIO(data))
            office.load_key(password=password, verify_password=True)
            out = io.BytesIO()
            office.decrypt(out)
        except InvalidKeyError:
            continue
        except (DecryptionError, FileFormatError, ParseError, KeyError, ValueError) as e:
            raise RecordError(
                "encrypted", f"encrypted Office file that cannot be decrypted: {type(e).__name__}: {e}"
            ) from e
        return copy_to_temp(out.getvalue(), Path(blob.name).suffix[:20])
    raise RecordError(
        "wrong_password",
        f"none of the {len(passwords)} configured passwords opens this encrypted Office file",
    )
