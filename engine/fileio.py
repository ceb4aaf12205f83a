"""Reading array files safely and writing outputs atomically.

Arrays are read without pickle. Outputs are written to a temporary file in the target's
folder and renamed into place, so a reader never sees a half-written file and a failed
write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import zipfile
from typing import IO, Iterator, Mapping

import numpy as np

from engine.errors import ModelError
from engine.memory import check_allocation


def read_npz(path: str | os.PathLike[str], what: str = "array file") -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (or a single ``.npy``, keyed by file stem), without pickle."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelError("no such file", path)
    if os.path.isdir(path):
        raise ModelError(f"is a folder, not an {what}", path)
    try:
        if path.endswith(".npy"):
            stem = os.path.splitext(os.path.basename(path))[0]
            with open(path, "rb") as f:
                _check_declared_size(f, stem, path)
            arr = np.load(path, allow_pickle=False)
            return {stem: arr}
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                for name in (n for n in z.namelist() if n.endswith(".npy")):
                    with z.open(name) as f:
                        _check_declared_size(f, name[: -len(".npy")], path)
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ModelError(f"not an .npz {what}", path)
            return {k: data[k] for k in data.files}
    except ModelError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise ModelError("holds Python objects (pickled); only plain numeric arrays are accepted", path) from None
        raise ModelError(f"not a readable numpy file ({' '.join(str(e).split())[:160]})", path) from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ModelError(f"not a readable numpy file ({type(e).__name__}: {' '.join(str(e).split())[:160]})", path) from None


def _check_declared_size(fp: IO[bytes], key: str, path: str) -> None:
    """Refuse an array whose ``.npy`` header declares more than memory holds, before numpy
    allocates it (a 100-byte file can claim terabytes)."""
    fmt = np.lib.format
    version = fmt.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(fp)
    else:
        return  # numpy's own reader decides on other versions
    check_allocation(shape, dtype, f"array {key!r}", path)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it to ``path``.

    An unwritable folder raises ModelError naming the path; on any error the temporary
    file is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ModelError("cannot write: the folder does not exist", path)
    if os.path.isdir(path):
        raise ModelError("cannot write: is a folder", path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    except OSError as e:
        raise ModelError(f"cannot write ({e.strerror or e})", path) from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise ModelError(f"cannot write ({e.strerror or e})", path) from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(tmp)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_writer(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Write arrays to an ``.npz`` atomically (uncompressed)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    write_bytes(path, buf.getvalue())
