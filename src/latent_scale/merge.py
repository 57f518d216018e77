"""`latent-scale merge`: combine shard results exactly into one result."""

from __future__ import annotations

from typing import Any

from .errors import InputError
from .identity import first_difference
from .report import Result, build_result
from .stats import PosteriorStats


def merge_results(results: list[dict[str, Any]]) -> Result:
    """Combine shard results exactly; refuse different models or recipes, naming the field."""
    if not results:
        raise InputError("merge needs at least one result file")
    first = results[0]
    shards = [s for r in results for s in r["run"].get("shards") or [r["run"].get("shard")]]
    if len(shards) > 1 and None in shards:
        raise InputError(f"result {shards.index(None) + 1} was not made with --shard i/n; "
                         "merging it with others would count images twice")
    dupes = {s for s in shards if s is not None and shards.count(s) > 1}
    if dupes:
        raise InputError(f"shard {sorted(dupes)[0]} appears more than once; merge each shard once")
    if len({s.split("/")[1] for s in shards if s}) > 1:
        raise InputError(f"cannot merge shards of different splits ({', '.join(sorted(set(shards)))}); "
                         "use the same n for every shard")
    stats = PosteriorStats.from_dict(first["state"])
    for r in results[1:]:
        diff = first_difference(first["model"], r["model"], "model") or first_difference(
            first["recipe"], r["recipe"], "recipe")
        if diff:
            raise InputError(f"cannot merge: {diff}")
        stats.merge(PosteriorStats.from_dict(r["state"]))
    seconds = sum(r["run"].get("seconds") or 0 for r in results)
    run = {"merged_from": len(results), "shards": shards, "seconds": seconds,
           "upcast_chunks": sum(r["run"].get("upcast_chunks", 0) for r in results),
           "stopped_early": any(r["run"].get("stopped_early") for r in results), "stop_reason": None}
    return build_result(stats, first["model"], {k: v for k, v in first["recipe"].items() if k != "posterior"},
                        [s for r in results for s in r["skipped"]], first["recipe"]["posterior"], run,
                        first["latent_shape"])
