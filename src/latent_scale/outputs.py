"""Every file the tool writes goes through here: one rule for where an output may go, and atomic writes
that keep an existing file's mode.

The rule (every command that writes: estimate -o/--checkpoint/--save-latents, merge -o, plot -o,
compare -o, apply): never a folder, device, FIFO or socket; never one of the command's own inputs (its
model's files, its data, its list, its result files), with or without --force; an existing file only
when the tool wrote it as the same kind (a result, a checkpoint, a plot: recognised by what the tool put
inside it, see plot_mark), or with --force. --force never replaces anything inside an input's folder,
and --checkpoint --force replaces only a checkpoint.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import math
import os
import re
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError
from .reading import read_json, refuse_special, stat_or_none
from .schema.keys import CHECKPOINT_KIND
from .version import __version__

if TYPE_CHECKING:
    from .options import Options

PLOT_MARK = "latent-scale"  # signed into every picture the tool draws, so a re-plot may replace its own
MAX_PLOT_BYTES = 64 << 20  # a larger file is no plot of ours; not read to find out


# --- writing ----------------------------------------------------------------------------------------------------

def to_strict(obj: Any) -> Any:
    """`obj` with every NaN/±Infinity replaced by None, so the JSON written is JSON (null = undefined)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: to_strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_strict(v) for v in obj]
    return obj


def write_json(path: Path | str, obj: Any) -> None:
    """Strict JSON (see to_strict), written atomically (see write_atomic)."""
    text = json.dumps(to_strict(obj), indent=2, allow_nan=False) + "\n"
    write_atomic(Path(path), text.encode())


def _write_error(path: Path, e: OSError) -> InputError:
    """One sentence for a failed write, saying what to change."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return InputError(f"cannot write {path}: the disk is full (or over quota); free some space and run again")
    if e.errno == errno.EISDIR:
        return InputError(f"cannot write {path}: it is a folder; pass a file name")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return InputError(f"cannot write {path}: permission denied (a read-only or someone else's folder); "
                          "choose another place")
    if e.errno == errno.ENAMETOOLONG:
        return InputError(f"cannot write {path}: the name is too long for its file system; choose a shorter one")
    if e.errno == errno.ENOTDIR:
        return InputError(f"cannot write {path}: a part of the path is a file, not a folder")
    return InputError(f"cannot write {path} ({e.strerror or e})")


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new file beside `path`, created with mode 0666 so the kernel applies the umask (and default ACLs)."""
    while True:
        tmp = path.with_name(f".{path.name[:64]}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _keep_mode(fd: int, like: Path) -> None:
    """Give the new file `like`'s mode (and owner, where we may) when `like` exists."""
    try:
        st = os.stat(like)
    except FileNotFoundError:
        return
    if os.geteuid() == 0:
        os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))


def write_atomic(path: Path | str, data: bytes, *, like: Path | str | None = None) -> None:
    """Write `data` to a temp file beside `path`, fsync and rename it over `path`, so a crash leaves the old
    file or the new one, never half of either. The file keeps the mode (and owner, as root) of `like`,
    default `path` itself, or gets the umask mode when new. Failures are one sentence; no temp file stays."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path)
        with os.fdopen(fd, "wb") as f:
            _keep_mode(f.fileno(), Path(like) if like else path)
            _write_all(f.fileno(), data)
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        raise _write_error(path, e) from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- what the tool wrote ----------------------------------------------------------------------------------------

def plot_mark(fmt: str) -> dict[str, Any] | None:
    """The savefig keywords that sign a picture in format `fmt` as drawn by latent-scale (None: the format
    cannot carry a mark, so the tool does not draw it). Vector formats name the tool as their Creator,
    PNG carries a text chunk, other raster formats a comment, description or XMP packet."""
    sign = f"{PLOT_MARK} {__version__}"
    if fmt == "png":
        return {"metadata": {PLOT_MARK: __version__}}
    if fmt in ("pdf", "ps", "eps", "svg", "svgz"):
        return {"metadata": {"Creator": sign}}
    pil = {"jpg": "comment", "jpeg": "comment", "gif": "comment", "tif": "description", "tiff": "description",
           "webp": "xmp", "avif": "xmp"}.get(fmt)
    return {"pil_kwargs": {pil: sign.encode() if pil == "xmp" else sign}} if pil else None


_VECTOR_MARK = re.compile(rb"/Creator \(latent-scale |%%Creator: latent-scale |<dc:creator>\s*<cc:Agent>\s*"
                          rb"<dc:title>latent-scale ")


def _is_our_plot(path: Path, size: int) -> bool:
    """Whether a picture carries plot_mark's signature (its format's magic bytes say nothing of who drew it)."""
    if size > MAX_PLOT_BYTES:
        return False
    data = path.read_bytes()
    if data.startswith(b"\x1f\x8b"):  # svgz
        try:
            data = gzip.GzipFile(fileobj=io.BytesIO(data)).read(MAX_PLOT_BYTES)
        except (OSError, EOFError):
            return False
    if _VECTOR_MARK.search(data):
        return True
    return _raster_marked(data)


def _raster_marked(data: bytes) -> bool:
    """A PNG text chunk, JPEG/GIF comment, TIFF description or WebP/AVIF XMP that starts with the mark."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            found = [im.info.get(k) for k in (PLOT_MARK, "comment", "xmp")]
            found.append(getattr(im, "tag_v2", {}).get(270))  # TIFF ImageDescription
    except Exception:  # noqa: BLE001 - whatever Pillow cannot open is no plot of ours
        return False
    if isinstance(found[0], str):
        return True
    return any(isinstance(v, (str, bytes)) and _text(v).startswith(f"{PLOT_MARK} ") for v in found[1:])


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _is_ours(path: Path, st: os.stat_result, kind: str) -> bool:
    """Whether an existing file is one the tool wrote as `kind` ("result", "checkpoint" or "plot")."""
    try:
        if kind == "plot":
            return _is_our_plot(path, st.st_size)
        obj = read_json(path)
    except (InputError, OSError):
        return False
    if kind == "checkpoint":
        return isinstance(obj, dict) and obj.get("kind") == CHECKPOINT_KIND
    results = obj if isinstance(obj, list) and obj else [obj]  # a --size sweep writes a list of results
    return all(isinstance(r, dict) and "schema" in r and "state" in r for r in results)


# --- where outputs may go ---------------------------------------------------------------------------------------

def _same_file(path: Path, st: os.stat_result | None, other: Path | str) -> bool:
    """The same file by inode (links, spellings) or, when neither exists yet, the same resolved path.
    One stat per input, so a list of a million images is compared in seconds."""
    try:
        o = os.stat(other)
    except OSError:
        o = None
    if st is None or o is None:
        return st is o and os.path.realpath(path) == os.path.realpath(other)
    return (st.st_dev, st.st_ino) == (o.st_dev, o.st_ino)


def _inside(path: Path, folder: Path | str) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(folder)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def _check_writable(path: Path, what: str, shown: Path | None = None) -> None:
    """Refuse, before any work, a place no file can be written: the nearest existing folder above it must
    be a folder we may write into (else the run would fail only at its end). `shown`: the path the user
    gave, when `path` is a file inside it."""
    above = path.absolute().parent
    while not os.path.lexists(above) and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise InputError(f"cannot write {what} {shown or path}: {above} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {what} {shown or path}: permission denied in {above} (a read-only or "
                         "someone else's folder); choose another place")


def _existing_ours(path: Path, inputs: Iterable[Path | str], folders: Iterable[Path | str], what: str,
                   kind: str) -> bool | None:
    """The part of the rule no --force overrides; then None (nothing there), or whether it is ours."""
    _check_writable(path, what)
    st = stat_or_none(path, what)
    if st is not None:
        refuse_special(path, st, what)
    for source in inputs:
        if _same_file(path, st, source):
            raise InputError(f"{what} {path} is also an input of this command ({source}); write to another file")
    if st is None:
        return None
    ours = _is_ours(path, st, kind)
    for folder in folders:
        if not ours and _inside(path, folder):
            raise InputError(f"{what} {path} is inside {folder}, an input of this command, and is not a "
                             f"latent-scale {kind}; write to another file")
    return ours


def check_output(path: Path | str, *, inputs: Iterable[Path | str] = (), folders: Iterable[Path | str] = (),
                 force: bool = False, what: str = "--output", kind: str = "result") -> None:
    """Refuse, before any work, an output that would destroy something: a folder or a non-regular file,
    one of the command's own inputs or a file inside an input folder (even with force), or an existing
    file the tool did not write as `kind` ("result", "checkpoint", "plot") unless force."""
    p = Path(path)
    if _existing_ours(p, inputs, folders, what, kind) is False and not force:
        raise InputError(f"{what} {p} exists and is not a latent-scale {kind}; "
                         "pass another path, or --force to replace it")


def check_checkpoint_path(path: Path | str, resume: bool, force: bool, *, inputs: Iterable[Path | str] = (),
                          folders: Iterable[Path | str] = ()) -> None:
    """The rule for --checkpoint: an existing checkpoint is continued (--resume) or replaced (--force),
    never silently overwritten by a fresh run; any other existing file is never replaced, --force or not."""
    ours = _existing_ours(Path(path), inputs, folders, "--checkpoint", "checkpoint")
    if ours is False:
        raise InputError(f"--checkpoint {path} exists and is not a latent-scale checkpoint; pass another path "
                         "(--force replaces only a checkpoint)")
    if ours and not resume and not force:
        raise InputError(f"--checkpoint {path} already exists; pass --resume to continue it, "
                         "or --force to start over and replace it")


def check_folder_output(path: Path | str, *, inputs: Iterable[Path | str] = (),
                        folders: Iterable[Path | str] = (), what: str = "--save-latents") -> None:
    """The rule for an output folder: a folder or nothing yet, neither an input nor inside an input's
    folder (the files it holds are the writer's to check)."""
    p = Path(path)
    st = stat_or_none(p, what)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what} {p} exists and is not a folder; pass a folder")
    for source in [*inputs, *folders]:
        if _same_file(p, st, source) or _inside(p, source):
            raise InputError(f"{what} {p} is an input of this command ({source}) or inside one; "
                             "write to another folder")
    _check_writable(p / "x", what, shown=p)  # a file inside the folder: the folder itself must be writable


# --- what an estimate reads -------------------------------------------------------------------------------------

def _spec_inputs(spec: str, named: dict[str, Path]) -> tuple[list[str], list[str]]:
    """(files, folders) a --model/--data/--latents value reads: the file or folder it names, a .txt
    list's entries, a glob's fixed folder; a named set's folder; nothing for a hub name."""
    from .sources.files import URL, glob_root, is_glob, read_list

    p = Path(spec).expanduser()
    if spec in named:
        return [], [str(named[spec])]
    if p.is_dir():
        return [], [str(p)]
    if p.is_file():
        listed = read_list(p) if p.suffix.lower() == ".txt" else []
        return [str(p), *(e for e in listed if not URL.match(e))], []
    if is_glob(spec):
        return [], [str(glob_root(p))]
    return [], []


def run_inputs(opts: Options) -> tuple[list[str], list[str]]:
    """(files, folders) an estimate reads: its model (a hub model's cache), its data or latents."""
    from .options import DEFAULT_MODEL
    from .sources.images import SAMPLES_DIR, cache_root

    files, folders = _spec_inputs(opts.latents or opts.data, {"imagenette": cache_root(opts.cache_dir) /
                                                              "imagenette", "samples": SAMPLES_DIR})
    model = opts.model if opts.latents else opts.model or DEFAULT_MODEL
    if model:
        import huggingface_hub.constants as hf

        more_files, more_folders = _spec_inputs(model, {})
        files, folders = files + more_files, folders + (more_folders if more_files or more_folders
                                                        else [hf.HF_HUB_CACHE])
    return files, folders


def check_run_outputs(opts: Options, checkpoint: Path | None, rank: int) -> None:
    """The rule for everything an estimate writes, before it reads anything: -o (rank 0), this
    process's --checkpoint, --save-latents."""
    files, folders = run_inputs(opts)
    outputs = {"-o": opts.output if rank == 0 else None, "checkpoint": checkpoint, "latents": opts.save_latents}
    others = {k: [v for o, v in outputs.items() if v and o != k] for k in outputs}
    if outputs["-o"]:
        check_output(opts.output, inputs=files + others["-o"], folders=folders, force=opts.force)
    if checkpoint:
        check_checkpoint_path(checkpoint, opts.resume, opts.force, inputs=files + others["checkpoint"],
                              folders=folders)
    if opts.save_latents:
        check_folder_output(opts.save_latents, inputs=files + others["latents"], folders=folders)
