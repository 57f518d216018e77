"""The README's offline examples run as written (scripts/check_readme.py), the demo VAE they use is
built the same on every run (scripts/make_demo_vae.py), and the commands offline messages suggest run."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def script(name: str) -> ModuleType:
    """A module of scripts/, loaded from its file (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


README = """\
Text with `$ inline` code.

```console
$ latent-scale known
model  published
$ latent-scale estimate --model demo-vae \\
    --data samples --size 128
images  40
```

```bash
$ latent-scale estimate   # needs the hub: shown, not run
```

~~~console
$ echo tilde
```
$ echo still inside: a backtick fence does not close a tilde block
~~~
$ not a command: outside every block
"""


def test_console_blocks_give_the_commands_in_order() -> None:
    """Only console blocks; `$ ` lines are commands, continuations joined, other lines output."""
    assert script("check_readme").console_commands(README) == [
        "latent-scale known", "latent-scale estimate --model demo-vae --data samples --size 128", "echo tilde",
        "echo still inside: a backtick fence does not close a tilde block"]


def test_commands_share_one_folder_and_the_first_failure_is_named(tmp_path: Path) -> None:
    check = script("check_readme")
    assert check.run_all(["echo 1 > a.txt", "test -f a.txt", "test -f ../$(basename $PWD)/a.txt"], tmp_path) is None
    failure = check.run_all(["true", "echo oops >&2; exit 3", "touch never"], tmp_path)
    assert failure == "'echo oops >&2; exit 3' exited 3:\noops" and not (tmp_path / "never").exists()
    assert check.run_all(["echo $HF_HUB_OFFLINE > env.txt"], tmp_path) is None
    assert (tmp_path / "env.txt").read_text() == "1\n"


def test_a_readme_without_console_blocks_fails(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("```bash\n$ latent-scale estimate\n```\n")
    assert script("check_readme").check(tmp_path / "README.md") == (
        f"{tmp_path / 'README.md'} has no ```console block: nothing to check")


def test_demo_vae_is_sd_layout_and_the_same_every_time(tmp_path: Path) -> None:
    """Seeded: two builds are byte-identical; the config is SD's layout (f/8, 4 channels, 0.18215)."""
    make = script("make_demo_vae").make_demo_vae
    first, second = make(tmp_path / "a"), make(tmp_path / "b")
    weights = "diffusion_pytorch_model.safetensors"
    assert (first / weights).read_bytes() == (second / weights).read_bytes()
    config = json.loads((first / "config.json").read_text())
    assert config["_class_name"] == "AutoencoderKL" and config["latent_channels"] == 4
    assert len(config["block_out_channels"]) == 4 and config["scaling_factor"] == 0.18215
    assert (first / weights).stat().st_size < 30e6


@pytest.mark.slow
def test_the_demo_command_offline_messages_suggest_runs(tmp_path: Path) -> None:
    """hub.NO_VAE's two commands, run as written in a clone, offline, with nothing else at hand."""
    from latent_scale.hub import NO_VAE

    check = script("check_readme")
    (tmp_path / "scripts").symlink_to(ROOT / "scripts", target_is_directory=True)
    commands = re.findall(r"`([^`]+)`", NO_VAE)
    assert len(commands) == 2
    assert check.run_all([commands[0], commands[1] + " --no-progress -o r.json"], tmp_path) is None
    assert json.loads((tmp_path / "r.json").read_text())["num_images"] == 40


@pytest.mark.slow
def test_every_offline_example_of_the_readme_runs() -> None:
    failure = script("check_readme").check(ROOT / "README.md")
    assert failure is None, failure
