"""Where the tool meets people's files: lists, outputs, checkpoints and odd models. Each case is a
named regression test (issues 10, 21 and 22); every refusal is one sentence and exit code 2, and leaves
the file it refused to write as it was."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

if TYPE_CHECKING:
    from conftest import Cli


@pytest.fixture
def base(vae_dir: Path) -> list[Any]:
    return ["estimate", "--model", vae_dir, "--size", 32, "--workers", 0, "--no-progress"]


def photo_list(photo_dir: Path, tmp_path: Path, extra: list[str]) -> Path:
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join([*map(str, sorted(photo_dir.rglob("*.png"))[:4]), *extra]) + "\n")
    return listing


def test_fifo_in_a_list_is_skipped_without_blocking(photo_dir: Path, tmp_path: Path, vae_dir: Path,
                                                   measure: Callable[..., Any], finishes: Callable[..., Any]) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.warns(UserWarning, match="pipe.png"):
        r = finishes(lambda: measure(vae_dir, photo_list(photo_dir, tmp_path, [str(fifo)])))
    assert r.num_images == 4 and "not a regular file" in r.skipped[0]["error"]


def test_fifo_in_a_latent_list_is_skipped_without_blocking(tmp_path: Path, measure: Callable[..., Any],
                                                          finishes: Callable[..., Any]) -> None:
    g = np.random.default_rng(0)
    for k in range(3):
        np.save(tmp_path / f"{k}.npy", g.normal(size=(4, 8, 8)).astype(np.float32))
    os.mkfifo(tmp_path / "pipe.pt")
    (tmp_path / "list.txt").write_text("0.npy\n1.npy\n2.npy\npipe.pt\n")
    with pytest.warns(UserWarning, match="pipe.pt"):
        r = finishes(lambda: measure(latents=str(tmp_path / "list.txt")))
    assert r.num_images == 3 and "not a regular file" in r.skipped[0]["error"]


def test_url_in_a_list_says_urls_are_not_read(photo_dir: Path, tmp_path: Path, vae_dir: Path,
                                              measure: Callable[..., Any]) -> None:
    url = "https://example.com/cat.jpg"
    with pytest.warns(UserWarning, match="URLs are not read"):
        r = measure(vae_dir, photo_list(photo_dir, tmp_path, [url]))
    assert r.skipped == [{"path": url, "error": "OSError: URLs are not read; download the file first and list "
                                                  "its local path"}]


def test_non_utf8_list_is_one_sentence(tmp_path: Path, base: list[Any], cli: Cli) -> None:
    listing = tmp_path / "latin1.txt"
    listing.write_bytes("caf\xe9.png\n".encode("latin-1"))
    cli.fails(*base, "--data", listing, says=["is not UTF-8"])


def test_one_image_gives_strict_json_with_null_interval(photo_dir: Path, tmp_path: Path, base: list[Any],
                                                        cli: Cli) -> None:
    out = tmp_path / "one.json"
    code, _, err = cli(*base, "--data", photo_dir, "--limit", 1, "-o", out)
    assert code == 0, err
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    saved = json.loads(text)
    assert saved["num_images"] == 1 and saved["scale_factor_ci95"] == [None, None]


def test_constant_latents_are_a_clear_error(tmp_path: Path, cli: Cli) -> None:
    for i in range(3):
        np.save(tmp_path / f"{i}.npy", np.full((4, 8, 8), 0.5, dtype=np.float32))
    cli.fails("estimate", "--latents", tmp_path, "--no-progress", "--workers", 0, says=["std", "0"])


def test_plot_to_an_unknown_format_is_one_sentence(result_json: Path, tmp_path: Path, cli: Cli) -> None:
    cli.fails("plot", result_json, "-o", tmp_path / "x.foo", says=["cannot draw a .foo picture", ".png"])
    assert not (tmp_path / "x.foo").exists()


def test_plot_keeps_an_existing_pictures_mode(result_json: Path, tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "hist.png"
    assert cli("plot", result_json, "-o", out)[0] == 0
    out.chmod(0o640)
    assert cli("plot", result_json, "-o", out)[0] == 0
    assert out.stat().st_mode & 0o777 == 0o640


def test_model_config_too_large_to_allocate_is_one_sentence(vae_dir: Path, tmp_path: Path, photo_dir: Path,
                                                             cli: Cli) -> None:
    huge = tmp_path / "huge"
    huge.mkdir()
    config = json.loads((vae_dir / "config.json").read_text())
    (huge / "config.json").write_text(json.dumps({**config, "block_out_channels": [2**20, 2**20]}))
    (huge / "diffusion_pytorch_model.safetensors").write_bytes((vae_dir / "diffusion_pytorch_model.safetensors")
                                                               .read_bytes())
    cli.fails("estimate", "--model", huge, "--data", photo_dir, "--no-progress", says=["more memory"])


def test_output_onto_a_folder_or_the_runs_checkpoint_is_refused(photo_dir: Path, tmp_path: Path, base: list[Any],
                                                                cli: Cli) -> None:
    cli.fails(*base, "--data", photo_dir, "-o", tmp_path, says=[str(tmp_path)])
    same = tmp_path / "state.json"
    cli.fails(*base, "--data", photo_dir, "-o", same, "--checkpoint", same, says=["state.json"])


def test_existing_checkpoint_without_resume_is_refused(photo_dir: Path, tmp_path: Path, base: list[Any],
                                                       cli: Cli) -> None:
    ckpt = tmp_path / "state.json"
    assert cli(*base, "--data", photo_dir, "--limit", 8, "--checkpoint", ckpt)[0] == 0
    before = ckpt.read_bytes()
    cli.fails(*base, "--data", photo_dir, "--limit", 4, "--checkpoint", ckpt, says=["--resume", "--force"])
    assert ckpt.read_bytes() == before  # 8 images of work kept


def test_resume_with_a_changed_image_list_names_the_first_difference(photo_dir: Path, tmp_path: Path,
                                                                     base: list[Any], cli: Cli) -> None:
    ckpt = tmp_path / "state.json"
    listing = photo_list(photo_dir, tmp_path, [])
    assert cli(*base, "--data", listing, "--checkpoint", ckpt)[0] == 0
    first = listing.read_text().splitlines()[0]
    listing.write_text("\n".join(listing.read_text().splitlines()[1:]) + "\n")
    cli.fails(*base, "--data", listing, "--checkpoint", ckpt, "--resume", says=["1 images differ", first])


def test_the_same_folder_spelled_two_ways_resumes(photo_dir: Path, tmp_path: Path, base: list[Any], cli: Cli,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = tmp_path / "state.json"
    assert cli(*base, "--data", photo_dir, "--limit", 6, "--checkpoint", ckpt)[0] == 0
    monkeypatch.chdir(photo_dir.parent)
    code, _, err = cli(*base, "--data", f"./{photo_dir.name}/", "--limit", 6, "--checkpoint", ckpt, "--resume")
    assert code == 0, err


def test_old_format_pickle_is_refused_in_words(vae_dir: Path, tmp_path: Path, photo_dir: Path, cli: Cli) -> None:
    import shutil

    import torch
    from diffusers import AutoencoderKL

    shutil.copy(vae_dir / "config.json", tmp_path / "config.json")
    torch.save(AutoencoderKL.from_pretrained(vae_dir).state_dict(), tmp_path / "vae.ckpt",
               _use_new_zipfile_serialization=False, pickle_protocol=4)
    err = cli.fails("estimate", "--model", tmp_path / "vae.ckpt", "--data", photo_dir, "--no-progress",
                    says=["old-format, non-zip PyTorch pickle", ".safetensors"])
    assert "operand" not in err


def test_a_glob_roots_ids_at_its_fixed_prefix_for_every_source(tmp_path: Path, options: Callable[..., Any]) -> None:
    """`data/**/x*.ext`: ids are relative to `data` for images, latents, videos and parquet alike,
    whichever files match (not the pattern's parent `data/**`, nor the matches' common folder)."""
    from latent_scale.sources.images import list_images
    from latent_scale.sources.latents import list_units
    from latent_scale.sources.tables import resolve
    from latent_scale.sources.video import list_videos

    for name in ("a/x1.png", "a/x1.npy", "a/x1.mp4", "a/x1.parquet", "b/y.png"):
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name).write_bytes(b"")
    np.save(tmp_path / "data/a/x1.npy", np.zeros((4, 2, 2), dtype=np.float32))
    want = str(tmp_path / "data")
    pattern = str(tmp_path / "data/**/x*")
    assert list_images(pattern + ".png")[2] == want
    assert list_units(pattern + ".npy", options("latents"), None)[2] == want
    assert list_videos(pattern + ".mp4")[1] == want
    assert resolve(pattern + ".parquet")[1] == want


# --- issue 22: no command writes over what it must not -------------------------------------------------------

ROOT = os.geteuid() == 0


@pytest.fixture
def own(vae_dir: Path, photo_dir: Path, tmp_path: Path) -> dict[str, Path]:
    """Copies of a model, four photographs, their .txt list and three latents, so that a broken rule could
    only damage copies; and a result of the photographs."""
    shutil.copytree(vae_dir, tmp_path / "vae")
    (tmp_path / "photos").mkdir()
    for src in sorted(photo_dir.rglob("*.png"))[:4]:
        shutil.copy(src, tmp_path / "photos" / src.name)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"photos/{p.name}\n" for p in sorted((tmp_path / "photos").iterdir())))
    (tmp_path / "latents").mkdir()
    for k in range(3):
        np.save(tmp_path / "latents" / f"{k}.npy", np.random.default_rng(k).normal(size=(4, 8, 8)))
    return {"vae": tmp_path / "vae", "photos": tmp_path / "photos", "list": listing,
            "latents": tmp_path / "latents", "photo": next((tmp_path / "photos").iterdir())}


def _refused(cli: Cli, target: Path, *args: Any, says: list[str]) -> None:
    """The command fails in one sentence and `target` is byte for byte what it was."""
    before = target.read_bytes()
    cli.fails(*args, says=says)
    assert target.read_bytes() == before


def test_compare_o_over_a_photo_is_refused(result_json: Path, own: dict[str, Path], cli: Cli) -> None:
    _refused(cli, own["photo"], "compare", result_json, result_json, "-o", own["photo"],
             says=["is not a latent-scale plot", "--force"])


def test_plot_o_over_a_foreign_png_is_refused_and_over_its_own_plot_replaces_it(result_json: Path, tmp_path: Path,
                                                                                own: dict[str, Path],
                                                                                cli: Cli) -> None:
    foreign = tmp_path / "hist.png"
    shutil.copy(own["photo"], foreign)  # a PNG: the format's magic bytes say nothing of who drew it
    _refused(cli, foreign, "plot", result_json, "-o", foreign, says=["hist.png exists and is not a latent-scale plot"])
    ours = tmp_path / "ours.png"
    for _ in range(2):
        code, _, err = cli("plot", result_json, "-o", ours)
        assert code == 0 and f"wrote {ours}" in err, err


@pytest.mark.parametrize("target", ["model config", "input image", "image elsewhere", "result"])
def test_checkpoint_force_replaces_only_a_checkpoint(own: dict[str, Path], result_json: Path, tmp_path: Path,
                                                     base: list[Any], cli: Cli, target: str) -> None:
    path = {"model config": own["vae"] / "config.json", "input image": own["photo"],
            "image elsewhere": tmp_path / "elsewhere.png", "result": tmp_path / "r.json"}[target]
    if not path.exists():
        shutil.copy(own["photo"] if target == "image elsewhere" else result_json, path)
    _refused(cli, path, *base, "--model", own["vae"], "--data", own["photos"], "--checkpoint", path, "--force",
             says=[path.name])


@pytest.mark.parametrize("target", ["model config", "model weights", "input image", "input latent", "input list"])
def test_output_force_never_replaces_an_input(own: dict[str, Path], base: list[Any], cli: Cli, target: str) -> None:
    data = ["--latents", own["latents"]] if target == "input latent" else ["--data", own["list"]]
    path = {"model config": own["vae"] / "config.json", "input image": own["photo"], "input list": own["list"],
            "model weights": own["vae"] / "diffusion_pytorch_model.safetensors",
            "input latent": own["latents"] / "1.npy"}[target]
    _refused(cli, path, *base, "--model", own["vae"], *data, "-o", path, "--force",
             says=[path.name, "an input of this command"])


def test_save_latents_into_the_data_folder_is_refused(own: dict[str, Path], base: list[Any], cli: Cli) -> None:
    cli.fails(*base, "--model", own["vae"], "--data", own["photos"], "--save-latents", own["photos"] / "cache",
              says=["--save-latents", "an input of this command"])
    assert not (own["photos"] / "cache").exists()


def _special(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"out-{kind}.png"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    return path


COMMANDS = {  # how each command that writes takes PATH as its output
    "estimate -o": lambda own, result, base, path: [*base, "--data", own["photos"], "-o", path, "--force"],
    "estimate --checkpoint": lambda own, result, base, path: [*base, "--data", own["photos"], "--checkpoint", path,
                                                              "--force"],
    "merge -o": lambda own, result, base, path: ["merge", result, "-o", path, "--force"],
    "plot -o": lambda own, result, base, path: ["plot", result, "-o", path, "--force"],
    "compare -o": lambda own, result, base, path: ["compare", result, result, "-o", path, "--force"],
}


@pytest.mark.parametrize("kind", ["fifo", pytest.param("char device", marks=pytest.mark.skipif(
    not ROOT, reason="making a character device needs root"))])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_fifo_or_device_is_never_an_output(own: dict[str, Path], result_json: Path, base: list[Any],
                                             tmp_path: Path, cli: Cli, finishes: Callable[..., Any], kind: str,
                                             command: str) -> None:
    path = _special(tmp_path, kind)
    code, _, err = finishes(lambda: cli(*COMMANDS[command](own, result_json, base, path)))
    cli.one_line_error(code, err, ["is not a regular file"])
    assert stat.S_ISFIFO(path.lstat().st_mode) if kind == "fifo" else stat.S_ISCHR(path.lstat().st_mode)


@pytest.mark.parametrize("flag", ["--data", "--latents", "--model", "--config"])
@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_fifo_or_device_is_never_read_as_an_input(photo_dir: Path, vae_dir: Path, tmp_path: Path, cli: Cli,
                                                    finishes: Callable[..., Any], flag: str, special: str) -> None:
    """A FIFO would block the run forever and /dev/zero never end: each is refused in one sentence, before
    anything is read from it."""
    path = Path(special)
    if special == "fifo":
        path = tmp_path / "input.toml"
        os.mkfifo(path)
    given = {"--model": vae_dir, "--data": photo_dir, flag: path}
    args = ["estimate", *(a for k, v in given.items() if not (flag == "--latents" and k == "--data") for a in (k, v)),
            "--size", 32, "--no-progress"]
    code, _, err = finishes(lambda: cli(*args))
    cli.one_line_error(code, err, ["not a regular file"])


@pytest.mark.parametrize("content, says", [("estimate = 3\n", "must be a table"),
                                            ("size = 32\n" + "# padding\n" * 200_000, "too large for a preset")])
def test_a_preset_that_is_no_table_or_too_large_is_one_sentence(photo_dir: Path, tmp_path: Path, base: list[Any],
                                                                cli: Cli, content: str, says: str) -> None:
    (tmp_path / "preset.toml").write_text(content)
    cli.fails(*base, "--data", photo_dir, "--config", tmp_path / "preset.toml", says=["--config", says])


# --- issue 21: a folder that cannot be written, a full disk, odd names -----------------------------------------

@pytest.mark.skipif(ROOT, reason="root may write into read-only folders")
@pytest.mark.parametrize("command", COMMANDS)
def test_a_read_only_folder_is_refused_before_any_work(own: dict[str, Path], result_json: Path, base: list[Any],
                                                       tmp_path: Path, cli: Cli, command: str) -> None:
    (tmp_path / "ro").mkdir(mode=0o555)
    cli.fails(*COMMANDS[command](own, result_json, base, tmp_path / "ro" / "out.png"), says=["permission denied"])
    assert list((tmp_path / "ro").iterdir()) == []


@pytest.mark.parametrize("command", ["estimate -o", "merge -o", "plot -o", "compare -o"])
def test_a_full_disk_is_one_sentence_and_leaves_no_partial_file(own: dict[str, Path], result_json: Path,
                                                                 base: list[Any], tmp_path: Path, cli: Cli,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 command: str) -> None:
    (tmp_path / "out").mkdir()
    write = os.write

    def full(fd: int, data: Any) -> int:
        if "/out/" in os.readlink(f"/proc/self/fd/{fd}"):  # only the output's folder is on the full disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(fd, data)

    monkeypatch.setattr(os, "write", full)
    cli.fails(*COMMANDS[command](own, result_json, base, tmp_path / "out" / "r.png"), says=["the disk is full"])
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("name", ["with space/r.json", "ünïcödé/ř.json", "-r.json"])
def test_odd_output_names_are_written_and_said(own: dict[str, Path], result_json: Path, base: list[Any],
                                               tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch,
                                               name: str) -> None:
    monkeypatch.chdir(tmp_path)
    picture = name.replace(".json", ".png")
    for command, out in (("estimate -o", name), ("merge -o", f"m{name}"), ("plot -o", picture),
                         ("compare -o", f"c{picture}")):
        code, _, err = cli(*COMMANDS[command](own, result_json, [*base, "--limit", 2], out))
        assert code == 0 and f"wrote {out}" in err, err
        assert (tmp_path / out).is_file()


def test_json_on_stdout_stays_pure_when_files_are_written(own: dict[str, Path], base: list[Any], tmp_path: Path,
                                                          cli: Cli) -> None:
    out, ckpt = tmp_path / "r.json", tmp_path / "ck.json"
    code, stdout, err = cli(*base, "--data", own["photos"], "--limit", 2, "--json", "-o", out, "--checkpoint", ckpt)
    assert code == 0, err
    assert json.loads(stdout) == json.loads(out.read_text())
    assert f"wrote {out}" in err and f"wrote {ckpt}" in err


def test_apply_says_which_files_it_wrote(own: dict[str, Path], result_json: Path, cli: Cli) -> None:
    code, _, err = cli("apply", result_json, "--to", own["vae"])
    assert code == 0, err
    config = own["vae"] / "config.json"
    assert f"wrote {config}.bak" in err and f"wrote {config}\n" in err
    written, measured = json.loads(config.read_text())["scaling_factor"], json.loads(result_json.read_text())
    assert written == pytest.approx(measured["scale_factor"], rel=1e-5)  # apply writes 6 significant digits
