"""Every option of `latent-scale estimate`, with its default and help text, in one place.

The CLI is generated from these fields and the Python API takes them as keywords, so the two
can never disagree. Validation happens here, before any model or data is touched, and this
module imports nothing heavy, so a bad option is reported at once.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .errors import InputError
from .fields import option

DEFAULT_MODEL = "CompVis/stable-diffusion-v1-4"
POSTERIORS = ("sample", "mode", "expected_sample")
PRESET_ANNOTATIONS = {"published", "notes", "name"}  # keys a configs/*.toml preset may carry besides options
PRESET_BYTES = 1 << 20  # a preset is a few lines; anything larger is not one
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes no more


PANELS = ("Model", "Data", "Statistics", "Output", "Large jobs", "Speed")  # help panels, in order
ALIASES = {"min_images": "min_units"}  # older spellings that keep working, in the API and on the command line


@dataclass
class Options:
    """Every option of `latent-scale estimate` but the sources' own; the CLI and the Python API are
    thin layers over these. `sources` holds each source's own options (see sources/)."""

    model: str | None = option(None, "Hub id, diffusers folder (pipeline or VAE), or single .safetensors/.ckpt file",
                               shown=f"{DEFAULT_MODEL}; none with --latents", panel="Model")
    subfolder: str | None = option(None, "Subfolder of the model holding the VAE", shown="found", panel="Model")
    revision: str | None = option(None, "Hub revision", shown="main", panel="Model")
    variant: str | None = option(None, "Weights variant, e.g. fp16", shown="none", panel="Model")
    tiling: bool = option(False, "Use the VAE's own tiled encode (large frames), for classes that have it",
                          panel="Model", flags=("--tiling",))
    data: str = option("imagenette", "imagenette, samples, a folder of images, videos or audio, a .txt list, "
                                     "'shards/*.tar', parquet files, a saved dataset folder or hf://ORG/NAME[:SPLIT]")
    latents: str | None = option(None, "Measure stored latents instead of encoding: a folder, glob, .txt list or "
                                       ".tar shards of .npy/.npz/.safetensors/.pt files, parquet, or a "
                                       "--save-latents folder")
    size: int | str = option(512, "Resize the shorter side, then center crop to size×size; a comma list "
                                  "(256,512,1024) measures every size in one pass", cli=str)
    crop: bool = option(True, "Center crop to size×size; --no-crop keeps the aspect ratio (one unit at a time)")
    limit: int | None = option(None, "Stop after N units of a seeded shuffled order", shown="all")
    column: str | None = option(None, "The image (or latent) column of a dataset", shown="found automatically")
    strict: bool = option(False, "Stop at the first unreadable unit (exit 2)", flags=("--strict",))
    cache_dir: str | None = option(None, "Dataset and hash cache", shown="$XDG_CACHE_HOME/latent-scale")
    posterior: str | None = option(None, "sample, mode or expected_sample (all three are in the JSON)",
                                   panel="Statistics", shown="sample; a --save-latents folder: its run's own")
    seed: int | None = option(None, "Seeds the unit order (for --limit) and the posterior noise", panel="Statistics",
                              shown="0; a --save-latents folder: its run's own")
    rel_tol: float | None = option(None, "Stop once the 95% interval is within ±rel_tol of the factor",
                                   panel="Statistics")
    min_units: int = option(50, "--rel-tol never stops before this many units", panel="Statistics",
                            flags=("--min-units", "--min-images"))
    output: str | None = option(None, "Write the result JSON here (atomically)", panel="Output",
                                flags=("--output", "-o"))
    force: bool = option(False, "Let -o replace a file that is not a latent-scale result, and --checkpoint an "
                                "existing checkpoint", panel="Output", flags=("--force",))
    save_latents: str | None = option(None, "Also write the latents as safetensors shards with a JSON index into "
                                            "this folder", panel="Output")
    progress: bool = option(True, "Show the progress bar on stderr", panel="Output")
    checkpoint: str | None = option(None, "Save state here periodically and on Ctrl-C/SIGTERM", panel="Large jobs")
    checkpoint_every: float = option(60.0, "Seconds between checkpoint saves", panel="Large jobs")
    resume: bool = option(False, "Continue from --checkpoint", panel="Large jobs", flags=("--resume",))
    shard: str | None = option(None, "i/n: take units i, i+n, …; combine with `merge`", panel="Large jobs")
    batch_size: int = option(12, "Units per DataLoader batch", panel="Speed")
    chunk_size: int | str = option("auto", "Units per encode() call; auto: sized to the CPU's cache (the whole "
                                   "batch on a GPU), halved on out-of-memory", panel="Speed", cli=str)
    device: str = option("auto", "auto (cuda when available), cpu, cuda or cuda:N", panel="Speed")
    dtype: str = option("auto", "auto (bfloat16 on CUDA and on CPUs with native bf16 units, else float32), "
                                "float32, bfloat16, float16", panel="Speed")
    workers: int | None = option(None, "DataLoader worker processes", panel="Speed",
                                 shown="0 on a CPU with ≤ 2 cores, else cores/4 up to 8; on CUDA min(8, cores - 1)")
    compile: bool = option(False, "torch.compile the encoder (worth it on GPUs, long runs)", panel="Speed",
                           flags=("--compile",))
    sources: dict[str, Any] = field(default_factory=dict, metadata={"cli": "skip"})

    @property
    def sizes(self) -> tuple[int, ...]:
        """--size as a tuple (one entry unless a sweep was asked for)."""
        return parse_sizes(self.size)

    def validate(self) -> None:
        """Every check that needs neither the model nor the data, so mistakes surface in milliseconds."""
        self.sizes  # noqa: B018 - parses or raises
        if self.posterior is not None:
            _check_choice("--posterior", self.posterior, POSTERIORS)
        check_at_least("batch_size", self.batch_size, 1)
        for name, low in (("limit", 1), ("workers", 0), ("min_units", 0)):
            if getattr(self, name) is not None:
                check_at_least(name, getattr(self, name), low)
        if self.chunk_size != "auto" and (not str(self.chunk_size).isdigit() or int(self.chunk_size) < 1):
            raise InputError(f"--chunk-size must be auto or a positive integer, got {self.chunk_size!r}")
        if self.rel_tol is not None and not 0 < self.rel_tol < 1:
            raise InputError(f"--rel-tol must be between 0 and 1, got {self.rel_tol}")
        check_positive(self, ("checkpoint_every",))
        if self.workers is not None and self.workers > max_workers():
            raise InputError(f"--workers {self.workers} is more than {max_workers()} (4 per core of this machine); "
                             "each worker is a process of its own, so more only use memory")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"--seed must be between 0 and 2^63 - 1 (a torch generator's seed), got {self.seed}")
        if self.resume and not self.checkpoint:
            raise InputError("--resume needs --checkpoint PATH")
        parse_shard(self.shard)

    def recipe(self) -> dict[str, Any]:
        """What about the options determines the numbers (compared by merge and resume), not how the
        work was split. The source and the encoder add their own parts (preprocessing, dtype)."""
        return {"data": self.latents or self.data, "posterior": self.posterior, "seed": self.seed,
                "limit": self.limit, "tiling": self.tiling}


def max_workers() -> int:
    """The most --workers accepted: 4 per core (100,000 forked until the machine ran out of memory)."""
    return 4 * (os.cpu_count() or 1)


def check_positive(options: Any, names: tuple[str, ...]) -> None:
    """Each named option, when given, must be > 0 (a source's options use it too)."""
    for name in names:
        value = getattr(options, name)
        if value is not None and not value > 0:
            raise InputError(f"--{_flag(name)} must be positive, got {value}")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def check_at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise InputError(f"--{_flag(name)} must be at least {low}, got {value}")


def _check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")


def parse_sizes(size: int | str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """512, "512", "256,512,1024" or [256, 512] -> (256, 512, ...): distinct, each at least 8."""
    parts = size if isinstance(size, (list, tuple)) else str(size).split(",")
    try:
        sizes = tuple(int(str(p).strip()) for p in parts)
    except ValueError:
        raise InputError(f"--size must be an integer or a comma list of integers, got {size!r}") from None
    if not sizes or min(sizes) < 8:
        raise InputError(f"--size must be at least 8, got {size!r}")
    if len(set(sizes)) != len(sizes):
        raise InputError(f"--size lists a size twice: {size!r}")
    return sizes


def parse_shard(shard: str | None) -> tuple[int, int]:
    """'i/n' -> (i, n); None -> (0, 1)."""
    if shard is None:
        return 0, 1
    try:
        i, n = (int(x) for x in str(shard).split("/"))
    except ValueError:
        raise InputError(f"--shard must look like i/n (e.g. 0/4), got {shard!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"--shard {shard}: need 0 <= i < n")
    return i, n


def read_preset(config: str) -> dict[str, Any]:
    """A TOML preset (configs/*.toml): options, optionally under [estimate], dashes or underscores.
    Only a regular file of at most PRESET_BYTES is read: a FIFO would block, /dev/zero never end."""
    path = Path(config).expanduser()
    try:
        if not path.is_file() and path.exists():
            raise OSError("not a regular file (a FIFO, device or socket)")
        with path.open("rb") as f:
            text = f.read(PRESET_BYTES + 1)
        if len(text) > PRESET_BYTES:
            raise OSError(f"larger than {PRESET_BYTES // 1024} KiB, too large for a preset")
        preset = tomllib.loads(text.decode())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise InputError(f"could not read --config {config}: {e}") from e
    section = preset.get("estimate", preset)
    if not isinstance(section, dict):
        raise InputError(f"--config {config}: `estimate` must be a table of options ([estimate]), "
                         f"not {type(section).__name__}")
    return {k.replace("-", "_"): v for k, v in section.items()}


def make_options(config: str | None = None, **options: Any) -> Options:
    """Preset from a TOML file, overridden by explicit keywords; each source's own options go to it;
    validated."""
    from .sources import registered

    preset = {k: v for k, v in (read_preset(config) if config else {}).items() if k not in PRESET_ANNOTATIONS}
    given = {**preset, **{k: v for k, v in options.items() if v is not None or k in ("limit", "rel_tol")}}
    given = {ALIASES.get(k, k): v for k, v in given.items()}
    core = {f.name for f in dataclasses.fields(Options)} - {"sources"}
    owner = {f.name: cls for cls in registered() if cls.options for f in dataclasses.fields(cls.options)}
    unknown = sorted(set(given) - core - set(owner))
    if unknown:
        raise InputError(f"unknown option(s): {', '.join(unknown)}")
    own = {cls.kind: cls.options(**{k: v for k, v in given.items() if owner.get(k) is cls})
           for cls in set(owner.values())}
    opts = Options(**{k: v for k, v in given.items() if k in core}, sources=own)
    opts.validate()
    for value in own.values():
        if callable(getattr(value, "validate", None)):
            value.validate()
    return opts
