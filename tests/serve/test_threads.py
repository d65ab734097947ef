"""`tunekit serve` leaves one core to its HTTP thread: torch runs on every core but one by default,
$OMP_NUM_THREADS or --threads decide otherwise, and the start-up line says what it runs on."""

import subprocess

import pytest
from serve_helpers import Server, child_env, free_port, tunekit_command

from tunekit.commands.serve import model_threads
from tunekit.errors import TunekitError


@pytest.mark.parametrize(("requested", "cores", "environ", "expected"), [
    (None, 2, {}, 1),
    (None, 16, {}, 15),
    (None, 1, {}, 1),
    (None, 8, {"OMP_NUM_THREADS": "8"}, None),  # the user's own setting: torch reads it
    (3, 8, {"OMP_NUM_THREADS": "8"}, 3),
])
def test_the_model_gets_every_core_but_one_unless_told(requested, cores, environ, expected):
    assert model_threads(requested, cores, environ) == expected


def test_zero_threads_is_refused():
    with pytest.raises(TunekitError, match="--threads must be at least 1"):
        model_threads(0, 4, {})


def test_the_start_up_line_names_the_threads_and_a_bad_value_exits_1(tiny_model_dir, tmp_path):
    server = Server(["serve", str(tiny_model_dir), "--threads", "1"], free_port(), tmp_path / "serve.log", "/health")
    try:
        server.wait_ready()
        assert "1 torch threads" in server.log.read_text()
    finally:
        server.stop()
    bad = subprocess.run(tunekit_command("serve", str(tiny_model_dir), "--threads", "0"), capture_output=True,
                         text=True, env=child_env(), timeout=120)
    assert bad.returncode == 1
    assert "--threads must be at least 1" in bad.stderr and "Traceback" not in bad.stderr
