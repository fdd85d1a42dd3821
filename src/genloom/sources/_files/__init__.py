"""The private machinery of file sources, one concern per module.

- ``blob``: one file to read (on disk or extracted from an archive) and the unpacking budget;
- ``discover``: globs, folder walks, special files, fingerprints;
- ``detect``: the format of a file, from what each registered reader declares;
- ``archives``: zip/tar/gz/bz2/xz members, extracted under limits;
- ``ole``: the stream names of OLE2 (Compound File) containers;
- ``encoding``: decoding bytes of unknown encoding;
- ``text``: cleaning extracted text, NULs, Markdown tables;
- ``chunking``: document blocks cut into chunks;
- ``crypto``: password-protected Office files;
- ``tools``: external converters on PATH;
- ``base``: :class:`~genloom.sources._files.base.FileSource`, which ties them together.

Readers import what they use from the module that holds it; nothing is re-exported here.
"""
