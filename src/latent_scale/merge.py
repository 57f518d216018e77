"""`latent-scale merge`: combine shard results exactly into one result.

Every input is read through the schema before its state is trusted (structure, seal, and numbers
against the state), compared with the first by content (see identity), and the split they came from
is checked for overlaps and gaps.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError
from .identity import result_difference
from .options import parse_shard
from .outputs import check_output, write_json
from .reading import read_json
from .schema import Result, read_result
from .schema.sweep import entry_names, is_sweep

if TYPE_CHECKING:
    from .schema.build import ResultDict


def merge_results(results: list[Any], names: list[str] | None = None) -> ResultDict:
    """Combine shard results (JSON objects) exactly; refuse unsound files, other models or recipes,
    overlapping or mixed splits, naming the file and the field; warn when shards of the split are missing."""
    from .schema.build import build_result, check_spread  # torch: after the cheap refusals

    if not results:
        raise InputError("merge needs at least one result file")
    names = names or [f"result {i + 1}" for i in range(len(results))]
    parsed = [read_result(doc, name) for doc, name in zip(results, names, strict=True)]
    shards = _shards(parsed, names)
    first = parsed[0]
    stats = first.state.to_stats()
    for r, name in zip(parsed[1:], names[1:], strict=True):
        diff = result_difference(first.to_dict(), r.to_dict()) or _state_difference(first, r)
        if diff:
            raise InputError(f"cannot merge {name} with {names[0]}: {diff}")
        stats.merge(r.state.to_stats())
    _warn_signatures(parsed, names)
    skipped = [{"path": s.path, "error": s.error} for r in parsed for s in r.skipped]
    _check_total(stats.num_images, len(skipped), first.recipe.dataset_size)
    posterior = first.recipe.posterior
    check_spread(stats, posterior, "the merged results")
    recipe = {k: v for k, v in first.recipe.raw.items() if k != "posterior"}
    same = len({tuple(r.latent_shape) for r in parsed}) == 1
    shape = first.latent_shape if same else [stats.channels]  # shards saw latents of different sizes
    return build_result(stats, first.model.raw, recipe, skipped, posterior, _run(parsed, shards), shape)


def _shards(results: list[Result], names: list[str]) -> list[str | None]:
    """Every input's shard(s): all 'i/n' of one n, each once, or a single unsharded result."""
    owned = [(s, name) for r, name in zip(results, names, strict=True) for s in r.run.shards or [r.run.shard]]
    shards = [s for s, _ in owned]
    if len(owned) > 1 and None in shards:
        raise InputError(f"{owned[shards.index(None)][1]} was not made with --shard i/n; "
                         f"merging it with others would count {results[0].unit_name}s twice")
    dupes = sorted({s for s in shards if s is not None and shards.count(s) > 1})
    if dupes:
        raise InputError(f"shard {dupes[0]} appears more than once ({', '.join(n for s, n in owned if s == dupes[0])});"
                         " merge each shard once")
    if len({parse_shard(s)[1] for s in shards if s}) > 1:
        raise InputError(f"cannot merge shards of different splits ({', '.join(sorted(set(shards)))}); "
                         "use the same n for every shard")
    return shards


def missing_shards(shards: list[str | None]) -> list[str]:
    """The shards of the i/n split that none of the inputs holds."""
    parsed = [parse_shard(s) for s in shards if s]
    if not parsed:
        return []
    n = parsed[0][1]
    have = {i for i, _ in parsed}
    return [f"{i}/{n}" for i in range(n) if i not in have]


def _state_difference(a: Result, b: Result) -> str | None:
    """What makes two sound states impossible to add (normally caught as a model difference first)."""
    for key in ("channels", "stochastic"):
        if getattr(a.state, key) != getattr(b.state, key):
            return f"state.{key} differs ({getattr(a.state, key)!r} vs {getattr(b.state, key)!r})"
    if a.state.mode.histogram.edges != b.state.mode.histogram.edges:
        return "state.mode.histogram.edges differ, so the histograms cannot be added"
    return None


def _warn_signatures(results: list[Result], names: list[str]) -> None:
    """The data's content signature is compared, not required: shards often run on copies of the data."""
    sigs = [(r.recipe.data_identity or {}).get("signature") for r in results]
    for sig, name in zip(sigs[1:], names[1:], strict=True):
        if None not in (sig, sigs[0]) and sig != sigs[0]:
            warnings.warn(f"the data's content signature in {name} differs from {names[0]}'s (files changed "
                          "between the runs, or copies with other dates); merging anyway", stacklevel=2)
            return


def _check_total(units: int, skipped: int, dataset_size: int | None) -> None:
    if dataset_size is not None and units + skipped > dataset_size:
        raise InputError(f"the merged results hold {units} units and {skipped} skipped ones, more than the "
                         f"{dataset_size} units of the data; a shard was counted twice or a file was edited")


def _run(results: list[Result], shards: list[str | None]) -> dict[str, Any]:
    missing = missing_shards(shards)
    if missing:
        n = len(missing) + len(shards)
        warnings.warn(f"merging only {len(shards)} of the {n} shards of the split; missing {', '.join(missing)}, "
                      "so the result covers only part of the data", stacklevel=2)
    return {"merged_from": len(results), "shards": shards, "missing_shards": missing,
            "seconds": sum(r.run.seconds or 0 for r in results),
            "upcast_chunks": sum(r.run.upcast_chunks for r in results),
            "stopped_early": any(r.run.stopped_early for r in results), "stop_reason": None}


def merge_files(paths: list[str | Path], output: str | Path, force: bool = False) -> ResultDict | list[ResultDict]:
    """What `latent-scale merge` does: read, check the output path, merge, write atomically.

    Files of a --size sweep (one result per size) merge size by size with files of the same sweep.
    """
    check_output(Path(output), inputs=[Path(p) for p in paths], force=force)
    names = [str(p) for p in paths]
    merged = _merge_docs([read_json(p) for p in paths], names)
    write_json(Path(output), merged)
    return merged


def _merge_docs(docs: list[Any], names: list[str]) -> ResultDict | list[ResultDict]:
    sweeps = [is_sweep(d) for d in docs]
    if not any(sweeps):
        return merge_results(docs, names)
    if not all(sweeps) or len({len(d) for d in docs}) > 1:
        name = names[sweeps.index(True)]
        raise InputError(f"{name} holds a list (one result per --size of a sweep), which merges only with files "
                         "of the same sweep; pass those, or the single results")
    labels = [entry_names(d, n) for d, n in zip(docs, names, strict=True)]
    return [merge_results(list(parts), [label[k] for label in labels])
            for k, parts in enumerate(zip(*docs, strict=True))]
