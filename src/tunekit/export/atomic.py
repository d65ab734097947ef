"""Write an output directory all at once: into a hidden temporary sibling, then rename.

    check_output_dir(output, overwrite)          # early, before any slow work
    with atomic_directory(output, overwrite) as tmp:
        model.save_pretrained(tmp)                # ... every file of the output

A crash, Ctrl-C or a full disk while writing leaves no directory under the final name:
the temporary one (`.NAME.partial-XXXX` beside it) is removed and the error says so. With
`overwrite`, the old directory is replaced only once the new one is complete. A process
killed outright (SIGKILL, power loss) can leave a `.NAME.partial-*` folder behind; it is
never mistaken for an output and can be deleted.

    write_text_atomic(path, text)                 # one file, the same way: `.NAME.XXXX` then rename
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tunekit.errors import TunekitError, is_disk_full


def check_output_dir(output: str | Path, overwrite: bool, inputs: Sequence[str | Path] = ()) -> Path:
    """The output path, refused when something is there and overwrite is not set, or when it holds an input."""
    output = Path(output)
    for source in inputs:
        if output.resolve() == Path(source).resolve() or output.resolve() in Path(source).resolve().parents:
            raise TunekitError(f"--output {output} would replace the input {source}: choose another --output")
    if output.exists() and not overwrite:
        raise TunekitError(f"{output} already exists: choose another --output, or pass --overwrite to replace it")
    if output.exists() and not output.is_dir():
        raise TunekitError(f"{output} exists and is not a directory: choose another --output")
    return output


@contextmanager
def atomic_directory(output: str | Path, overwrite: bool = False, inputs: Sequence[str | Path] = ()) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it becomes `output`, on any error it is removed."""
    output = check_output_dir(output, overwrite, inputs)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the output is an ordinary folder
    try:
        yield tmp
        _replace(tmp, output)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise TunekitError(f"disk full while writing {output}: nothing was written under that name; "
                               "free some space and run the command again") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace(tmp: Path, output: Path) -> None:
    """Rename tmp to output; an old output is moved aside first and deleted after."""
    if not output.exists():
        os.rename(tmp, output)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
    os.rename(output, old / output.name)
    os.rename(tmp, output)
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write one text file whole: a hidden temporary beside it, renamed over it; removed on any error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc):
            raise TunekitError(f"disk full while writing {path}: the file was left as it was; free some space "
                               "and run the command again") from None
        raise
    return path
