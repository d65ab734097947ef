"""atomic_directory: a complete output under the final name, or nothing there at all."""

from __future__ import annotations

import errno

import pytest

from tunekit.errors import TunekitError
from tunekit.export.atomic import atomic_directory, check_output_dir


def entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_the_directory_appears_under_its_name_only_when_complete(tmp_path):
    output = tmp_path / "model"
    with atomic_directory(output) as tmp:
        (tmp / "weights").write_text("w")
        assert not output.exists() and tmp.parent == tmp_path and tmp.name.startswith(".model.partial-")
    assert entries(tmp_path) == ["model"] and entries(output) == ["weights"]


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), RuntimeError("boom")])
def test_a_failure_leaves_no_directory_and_no_leftovers(tmp_path, failure):
    with pytest.raises(type(failure)):
        with atomic_directory(tmp_path / "model") as tmp:
            (tmp / "half-written").write_text("x")
            raise failure
    assert entries(tmp_path) == []


def test_a_full_disk_is_reported_and_cleaned_up(tmp_path):
    with pytest.raises(TunekitError, match="disk full while writing .*nothing was written under that name"):
        with atomic_directory(tmp_path / "model") as tmp:
            (tmp / "shard-1").write_text("x")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert entries(tmp_path) == []


def test_an_existing_output_is_refused_unless_overwrite_and_replaced_only_on_success(tmp_path):
    output = tmp_path / "model"
    output.mkdir()
    (output / "old").write_text("old")
    with pytest.raises(TunekitError, match="already exists.*--overwrite"):
        check_output_dir(output, overwrite=False)
    with pytest.raises(RuntimeError):
        with atomic_directory(output, overwrite=True):
            raise RuntimeError("interrupted")
    assert entries(output) == ["old"]  # the old output survives a failed replacement
    with atomic_directory(output, overwrite=True) as tmp:
        (tmp / "new").write_text("new")
    assert entries(output) == ["new"] and entries(tmp_path) == ["model"]


def test_an_output_that_would_replace_an_input_is_refused(tmp_path):
    run = tmp_path / "runs" / "ner"
    run.mkdir(parents=True)
    for output in (run, tmp_path / "runs"):
        with pytest.raises(TunekitError, match="would replace the input"):
            check_output_dir(output, overwrite=True, inputs=[run])


def test_the_output_folder_gets_ordinary_permissions(tmp_path):
    """mkdtemp makes a private (0700) folder; what is renamed into place follows the umask."""
    import os

    from tunekit.export.atomic import atomic_directory

    with atomic_directory(tmp_path / "out") as tmp:
        (tmp / "f").write_text("x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~mask
