"""Run every offline example of README.md as written, in a fresh folder; fail on the first that fails.

    python scripts/check_readme.py [README.md] [--list]

The convention (README authors: follow it). A fenced block whose info string is `console` holds
commands that run offline, as written, from a folder holding only the demo VAE:

    ```console
    $ latent-scale estimate --model demo-vae --data samples --size 128 -o result.json
    images            40
    ...
    $ latent-scale apply result.json --to demo-vae --dry-run
    ```

- A line starting with `$ ` is a command (a trailing `\\` continues it on the next line); the lines
  after it, up to the next command, are its example output and are not compared.
- Commands run in order, in one temporary folder shared by the whole README, so a later block may
  use a file an earlier one wrote. The folder holds `demo-vae` (scripts/make_demo_vae.py) and
  `scripts/` (this repository's, so `python scripts/make_demo_vae.py demo-vae` runs as in a clone).
- The environment is offline: HF_HUB_OFFLINE=1 and every cache inside the temporary folder.
- Commands that need the hub, a GPU, torchrun or a download go in ```bash blocks: shown, not run.

Exit code 0 when every command exits 0; 1 naming the first that did not (or when the README has
no console block: a check that checks nothing must not pass).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(`{3,}|~{3,})\s*(\S*)")
PROMPT = "$ "


def console_commands(text: str) -> list[str]:
    """The commands of every ```console block, in order, continuation lines joined."""
    commands: list[str] = []
    marker, console = None, False  # the open block's fence (None: outside any), and whether it is console
    for line in text.splitlines():
        match = FENCE.match(line.strip())
        if marker is None:
            if match:
                marker, console = match.group(1), match.group(2) == "console"
        elif match and not match.group(2) and line.strip().startswith(marker):
            marker = None
        elif console and line.startswith(PROMPT):
            commands.append(line[len(PROMPT):].strip())
        elif console and commands and commands[-1].endswith("\\"):
            commands[-1] = commands[-1][:-1].rstrip() + " " + line.strip()
    return commands


def offline_env(home: Path) -> dict[str, str]:
    """No hub, every cache under `home`, this interpreter's scripts (latent-scale, python) first on PATH."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(home / "hf-home"),
            "XDG_CACHE_HOME": str(home / "cache"), "PATH": path}


def prepare(folder: Path) -> None:
    """The demo VAE and the repository's scripts/, as a reader of the README in a clone has them."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_demo_vae.py"), str(folder / "demo-vae")],
                   check=True, capture_output=True, env=offline_env(folder))
    (folder / "scripts").symlink_to(ROOT / "scripts", target_is_directory=True)


def run_all(commands: list[str], folder: Path, timeout: float = 600) -> str | None:
    """Run each command in `folder` with bash; None when all exit 0, else what failed and its output."""
    env = offline_env(folder)
    for command in commands:
        print(f"$ {command}", flush=True)
        try:
            proc = subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"{command!r} ran past {timeout:g} s"
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            return f"{command!r} exited {proc.returncode}:\n{tail}"
    return None


def check(readme: Path, timeout: float = 600) -> str | None:
    """Run the offline examples of `readme` in a fresh folder; None when they all pass, else why not."""
    commands = console_commands(readme.read_text())
    if not commands:
        return f"{readme} has no ```console block: nothing to check"
    with tempfile.TemporaryDirectory(prefix="check-readme-") as tmp:
        prepare(Path(tmp))
        return run_all(commands, Path(tmp), timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("readme", nargs="?", type=Path, default=ROOT / "README.md")
    parser.add_argument("--list", action="store_true", help="Print the commands found; run nothing.")
    parser.add_argument("--timeout", type=float, default=600, help="Seconds each command may take.")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(console_commands(args.readme.read_text())))
        return 0
    failure = check(args.readme, args.timeout)
    print(failure or f"every console example of {args.readme} ran", file=sys.stderr if failure else sys.stdout)
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
