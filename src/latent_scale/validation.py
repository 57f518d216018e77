"""Every state the tool reads back (merge inputs, checkpoints) is checked before it is trusted.

Results and checkpoints are plain JSON: damage, a hand edit or a file from elsewhere can hold
negative or fractional counts, NaN moments or channels that disagree, and the exact merge
formulas would turn any of them into a confident wrong number. So each invariant the
accumulator keeps is checked here, and a file that breaks one is refused, naming the field.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from . import options
from .errors import InputError
from .outputs import CHECKPOINT_KIND
from .options import POSTERIORS

MAX_COUNT = 2**53  # float64 holds every whole number below this exactly
MAX_CHANNELS = 1 << 16
DAMAGED = "the file is damaged or was edited"
MOMENTS = ("n", "mean", "m2", "m3", "m4")


class Invalid(Exception):
    """One broken invariant: the dotted field, what is wrong with it, and the likely cause."""

    def __init__(self, field: str, problem: str, cause: str = DAMAGED) -> None:
        super().__init__(f"{field} {problem}")
        self.field, self.problem, self.cause = field, problem, cause

    def refuse(self, where: str) -> InputError:
        return InputError(f"{where}: {self.field} {self.problem}; {self.cause}")


def _join(field: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{field}[{key}]"
    return f"{field}.{key}" if field else key


def kind_of(x: Any) -> str:
    """How a JSON value is called in messages."""
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "true/false"
    names = {dict: "a JSON object", list: "a list", str: "a string", int: "a number", float: "a number"}
    return names.get(type(x), type(x).__name__)


def _obj(x: Any, field: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(x, dict):
        raise Invalid(field or "the document", f"is {kind_of(x)}, not a JSON object")
    for key in keys:
        if key not in x:
            raise Invalid(_join(field, key), "is missing")
    return x


def _list(x: Any, field: str, length: int | None = None) -> list[Any]:
    if not isinstance(x, list):
        raise Invalid(field, f"is {kind_of(x)}, not a list")
    if length is not None and len(x) != length:
        raise Invalid(field, f"has {len(x)} entries, not {length}")
    return x


def _number(x: Any, field: str, finite: bool = True) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise Invalid(field, f"is {kind_of(x)}, not a number")
    try:
        v = float(x)
    except OverflowError:
        raise Invalid(field, "is too large for a float") from None
    if finite and not math.isfinite(v):
        raise Invalid(field, f"is {v}, not a finite number")
    return v


def _numbers(x: Any, field: str, length: int | None = None, finite: bool = True) -> list[float]:
    return [_number(v, _join(field, i), finite) for i, v in enumerate(_list(x, field, length))]


def _count(x: Any, field: str) -> int:
    v = _number(x, field)
    if v < 0 or v != int(v) or v >= MAX_COUNT:
        raise Invalid(field, f"is {x!r}, not a count (a whole number from 0 to 2**53)")
    return int(v)


def _optional(x: Any, field: str, check: Any) -> Any:
    return None if x is None else check(x, field)


def _string(x: Any, field: str) -> str:
    if not isinstance(x, str):
        raise Invalid(field, f"is {kind_of(x)}, not a string")
    return x


def _flag(x: Any, field: str) -> bool:
    if not isinstance(x, bool):
        raise Invalid(field, f"is {kind_of(x)}, not true/false")
    return x


def _moments(d: Any, field: str, channels: int) -> tuple[int, list[float]]:
    """Per-channel count (equal in every channel: each latent has every channel) and means."""
    d = _obj(d, field, MOMENTS)
    counts = [_count(v, _join(_join(field, "n"), c)) for c, v in enumerate(_list(d["n"], _join(field, "n"), channels))]
    if len(set(counts)) > 1:
        raise Invalid(_join(field, "n"), f"differs between channels ({counts}), though every latent has every channel")
    mean, m2, m3, m4 = (_numbers(d[k], _join(field, k), channels) for k in MOMENTS[1:])
    n = counts[0]
    for c in range(channels):
        if m2[c] < 0:
            raise Invalid(_join(_join(field, "m2"), c), f"is {m2[c]!r}, but a sum of squares is never negative")
        if m4[c] < -1e-9 * m2[c] ** 2 / max(n, 1):  # m4 >= m2²/n exactly; the slack is round-off's
            raise Invalid(_join(_join(field, "m4"), c), f"is {m4[c]!r}, but a sum of 4th powers is never negative")
        if n == 0 and (mean[c], m2[c], m3[c], m4[c]) != (0, 0, 0, 0):
            raise Invalid(field, f"has moments in channel {c} although it counts no values")
    return n, mean


def _images(d: Any, field: str, values: int) -> int:
    """The per-image co-moments; returns how many images."""
    d = _obj(d, field, ("ref", "n", "mean", "comoment"))
    n = _count(d["n"], _join(field, "n"))
    if n > values or (n == 0) != (values == 0):
        raise Invalid(_join(field, "n"), f"is {n}, which does not fit the {values} values counted per channel")
    if n:
        _number(d["ref"], _join(field, "ref"))
    mean = _numbers(d["mean"], _join(field, "mean"), 2)
    rows = _list(d["comoment"], _join(field, "comoment"), 2)
    como = [_numbers(r, _join(_join(field, "comoment"), i), 2) for i, r in enumerate(rows)]
    if mean[1] < 0 or como[0][0] < 0 or como[1][1] < 0:
        raise Invalid(field, "has a negative mean square or variance")
    return n


def _range(d: dict[str, Any], field: str, channels: int, n: int, mean: list[float]) -> None:
    """min <= mean <= max per channel (to round-off) once anything was counted."""
    lo = _numbers(d["min"], _join(field, "min"), channels, finite=not n)
    hi = _numbers(d["max"], _join(field, "max"), channels, finite=not n)
    for c in range(channels if n else 0):
        slack = 1e-9 * max(abs(lo[c]), abs(hi[c]))
        if not lo[c] - slack <= mean[c] <= hi[c] + slack:
            raise Invalid(_join(_join(field, "moments.mean"), c), f"is {mean[c]!r}, outside [min, max] = "
                          f"[{lo[c]!r}, {hi[c]!r}]")


def _histogram(d: Any, field: str, channels: int, n: int) -> list[float] | None:
    """Edges strictly increasing; per channel, non-negative counts that add up to the channel's count."""
    if not d:
        return None  # a state saved before histograms existed
    d = _obj(d, field, ("edges", "counts"))
    edges = _numbers(d["edges"], _join(field, "edges"))
    if not edges or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise Invalid(_join(field, "edges"), "are not strictly increasing")
    for c, row in enumerate(_list(d["counts"], _join(field, "counts"), channels)):
        where = _join(_join(field, "counts"), c)
        total = sum(_count(v, _join(where, k)) for k, v in enumerate(_list(row, where, len(edges) + 1)))
        if total != n:
            raise Invalid(where, f"adds up to {total}, not the channel's {n} values")
    return edges


def _latent(d: Any, field: str, channels: int) -> tuple[int, int, list[float] | None]:
    """One LatentStats dict: (values per channel, images, histogram edges)."""
    d = _obj(d, field, ("channels", "moments", "images", "min", "max"))
    if d["channels"] != channels or isinstance(d["channels"], bool):
        raise Invalid(_join(field, "channels"), f"is {d['channels']!r}, not the state's {channels}")
    n, mean = _moments(d["moments"], _join(field, "moments"), channels)
    images = _images(d["images"], _join(field, "images"), n)
    _range(d, field, channels, n, mean)
    return n, images, _histogram(d.get("histogram"), _join(field, "histogram"), channels, n)


def _same(value: Any, expected: Any, field: str, other: str) -> None:
    if value != expected:
        raise Invalid(field, f"is {value!r} but {other} is {expected!r}; both count the same latents")


def check_posterior(state: Any, field: str = "state") -> int:
    """Raise Invalid unless `state` is a well-formed PosteriorStats dict; returns its channel count."""
    d = _obj(state, field, ("channels", "stochastic", "mode"))
    channels = d["channels"]
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
        raise Invalid(_join(field, "channels"), f"is {channels!r}, not a channel count")
    mode = _latent(d["mode"], _join(field, "mode"), channels)
    if not _flag(d["stochastic"], _join(field, "stochastic")):
        return channels
    _obj(d, field, ("sample", "sigma2"))
    sample = _latent(d["sample"], _join(field, "sample"), channels)
    _same(sample[0], mode[0], _join(field, "sample.moments.n"), _join(field, "mode.moments.n"))
    _same(sample[1], mode[1], _join(field, "sample.images.n"), _join(field, "mode.images.n"))
    if None not in (mode[2], sample[2]) and mode[2] != sample[2]:
        raise Invalid(_join(field, "sample.histogram.edges"), f"differ from {field}.mode.histogram.edges")
    n, mean = _moments(d["sigma2"], _join(field, "sigma2"), channels)
    _same(n, mode[0], _join(field, "sigma2.n"), _join(field, "mode.moments.n"))
    if min(mean) < 0:
        raise Invalid(_join(field, "sigma2.mean"), "is negative, but a variance never is")
    return channels


def check_state(state: Any, where: str) -> None:
    """Refuse (InputError naming `where` and the field) a PosteriorStats dict that breaks an invariant."""
    try:
        check_posterior(state)
    except Invalid as e:
        raise e.refuse(where) from None


def canonical(value: Any) -> bytes:
    """One byte string per JSON value, whatever the spacing and key order of the file it came from."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def state_checksum(value: Any) -> str:
    """sha256 of the canonical JSON of a state (or of a checkpoint's run)."""
    return hashlib.sha256(canonical(value)).hexdigest()


def _sealed_part(doc: dict[str, Any]) -> tuple[str, Any]:
    """What the checksum covers: a checkpoint's run (its states and `done`), a result's state."""
    return ("run", doc.get("run")) if doc.get("kind") == CHECKPOINT_KIND else ("state", doc.get("state"))


def seal(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with its `state_sha256`; call it on a result or checkpoint just before writing it."""
    return {**doc, "state_sha256": state_checksum(_sealed_part(doc)[1])}


def check_sealed(doc: dict[str, Any], where: str) -> None:
    """Refuse a file whose `state_sha256` does not match its content; a file without one (written
    before checksums existed) passes here and relies on the invariants alone."""
    if "state_sha256" not in doc:
        return
    name, part = _sealed_part(doc)
    if doc["state_sha256"] != state_checksum(part):
        raise InputError(f"{where}: state_sha256 does not match its {name}; {DAMAGED}")


def parse_shard(x: Any, field: str) -> tuple[int, int] | None:
    """A recorded `shard`: null, or 'i/n' with 0 <= i < n."""
    if x is None:
        return None
    try:
        return options.parse_shard(x if isinstance(x, str) else "?")  # the rule --shard follows
    except InputError:
        raise Invalid(field, f"is {x!r}, not null or 'i/n' with 0 <= i < n") from None


def _dims(x: Any, field: str, channels: int) -> None:
    """A latent shape: (channels, ...) of positive whole numbers."""
    dims = _list(x, field)
    if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims) or dims[0] != channels:
        raise Invalid(field, f"is {x!r}, not the shape of {channels}-channel latents")


def _skipped(x: Any, field: str) -> None:
    for i, entry in enumerate(_list(x, field)):
        entry = _obj(entry, _join(field, i), ("path", "error"))
        _string(entry["path"], _join(_join(field, i), "path"))
        _string(entry["error"], _join(_join(field, i), "error"))


def _model(d: Any) -> None:
    """The model fields the report reads (config values it compares the measurement with)."""
    d = _obj(d, "model", ("source", "class"))
    _optional(d["source"], "model.source", _string)  # null: cached --latents measured without --model
    _optional(d["class"], "model.class", _string)
    for key in ("config_scaling_factor", "config_shift_factor"):
        _optional(d.get(key), _join("model", key), _number)
    for key in ("config_latents_mean", "config_latents_std"):
        _optional(d.get(key), _join("model", key), _numbers)
    _optional(d.get("identity"), "model.identity", _obj)


def _recipe(d: Any, stochastic: bool) -> None:
    d = _obj(d, "recipe", ("posterior",))
    allowed = POSTERIORS if stochastic else ("mode",)
    if d["posterior"] not in allowed:
        raise Invalid("recipe.posterior", f"is {d['posterior']!r}, not one of {', '.join(allowed)} "
                      f"(the state is {'stochastic' if stochastic else 'deterministic'})")
    _optional(d.get("dataset_size"), "recipe.dataset_size", _count)
    _optional(d.get("data_identity"), "recipe.data_identity", _obj)


def _run(d: Any) -> None:
    """The run fields merge reads: the shard(s), time, upcasts and whether it stopped early."""
    d = _obj(d, "run")
    parse_shard(d.get("shard"), "run.shard")
    for i, shard in enumerate(_list(d.get("shards", []), "run.shards")):
        parse_shard(shard, f"run.shards[{i}]")
    if (_optional(d.get("seconds"), "run.seconds", _number) or 0) < 0:
        raise Invalid("run.seconds", "is negative")
    _count(d.get("upcast_chunks", 0), "run.upcast_chunks")
    _flag(d.get("stopped_early", False), "run.stopped_early")


RESULT_KEYS = ("schema", "state", "model", "recipe", "run", "skipped", "latent_shape")


def check_result(doc: Any, where: str) -> None:
    """Refuse (InputError naming `where` and the field) anything but a sound schema-1 result."""
    if isinstance(doc, dict) and doc.get("kind") == CHECKPOINT_KIND:
        raise InputError(f"{where} is a checkpoint, not a result; finish the run with --resume, "
                         "then merge its -o result")
    if not isinstance(doc, dict) or not {"schema", "state"} & set(doc):
        what = kind_of(doc) if not isinstance(doc, dict) else "a JSON object without schema or state"
        raise InputError(f"{where} is not a latent-scale result (it holds {what})")
    try:
        _obj(doc, "", RESULT_KEYS)
        if doc["schema"] != 1:
            raise Invalid("schema", f"is {doc['schema']!r}", "this version of latent-scale reads schema 1")
        _model(doc["model"])
        _run(doc["run"])
        _skipped(doc["skipped"], "skipped")
        channels = check_posterior(doc["state"])  # before the checksum: naming the broken field says more
        _recipe(doc["recipe"], doc["state"]["stochastic"])
        _dims(doc["latent_shape"], "latent_shape", channels)
    except Invalid as e:
        raise e.refuse(where) from None
    check_sealed(doc, where)


def check_checkpoint(doc: Any, where: str, positions: int) -> None:
    """Refuse a checkpoint that is not sound, or whose `done` does not fit a run of `positions` units."""
    if not isinstance(doc, dict) or doc.get("kind") != CHECKPOINT_KIND:
        raise InputError(f"{where} is not a latent-scale checkpoint; pass the file --checkpoint wrote, "
                         "or another --checkpoint")
    try:
        _obj(doc, "", ("fingerprint", "run"))
        _obj(doc["fingerprint"], "fingerprint")
        _checkpoint_run(doc["run"], positions)
    except Invalid as e:
        raise e.refuse(where) from None
    check_sealed(doc, where)


def _checkpoint_run(run: Any, positions: int) -> None:
    """loop.Run.to_dict(): one state (or null) per view, and `done` within the run's units."""
    run = _obj(run, "run", ("stats", "done", "skipped", "upcast_chunks", "latent_shapes"))
    done = _count(run["done"], "run.done")
    if done > positions:
        raise Invalid("run.done", f"is {done}, more than the {positions} units of this run")
    _skipped(run["skipped"], "run.skipped")
    _count(run["upcast_chunks"], "run.upcast_chunks")
    stats = _list(run["stats"], "run.stats")
    shapes = _list(run["latent_shapes"], "run.latent_shapes", len(stats))
    frames = _list(run.get("frames", [None] * len(stats)), "run.frames", len(stats))
    for v, state in enumerate(stats):
        _checkpoint_view(run, v, state, shapes[v], frames[v], done)


def _checkpoint_view(run: dict[str, Any], v: int, state: Any, shape: Any, frames: Any, done: int) -> None:
    """Every consumed unit of a view was either counted or skipped: images + skipped == done."""
    seen = 0
    if state is not None:
        channels = check_posterior(state, f"run.stats[{v}]")
        _dims(shape, f"run.latent_shapes[{v}]", channels)
        seen = _count(state["mode"]["images"]["n"], f"run.stats[{v}].mode.images.n")
        for part, s in (_obj(frames, f"run.frames[{v}]") if frames is not None else {}).items():
            check_posterior(s, f"run.frames[{v}].{part}")
    for i, entry in enumerate(run["skipped"]):
        if not isinstance(entry.get("view", 0), int) or isinstance(entry.get("view"), bool):
            raise Invalid(f"run.skipped[{i}].view", f"is {entry['view']!r}, not a view number")
    lost = sum(1 for entry in run["skipped"] if entry.get("view", v) == v)
    if seen + lost != done:
        raise Invalid("run.done", f"is {done}, but view {v} holds {seen} units and {lost} skipped ones")


def check_spread(stats: Any, posterior: str, what: str) -> None:
    """Refuse latents without spread: a scale factor 1/std does not exist when std is 0.

    `stats` is a PosteriorStats; `what` names them for the user (e.g. "the merged results").
    """
    std = stats.normalised(posterior)["std"]
    if not std > 0:
        raise InputError(f"{what} have latents with no spread (std {std} for posterior {posterior}), so no scale "
                         "factor exists; check that the model's weights are trained and its encoder is not broken")
