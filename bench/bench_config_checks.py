"""Time of the configuration checks the main Snakemake process runs before planning.

``validate_config(config, deep=True)`` on a config file (default ``config/config.yaml``), with the
per-process caches of traced graph nodes cleared before every repetition, so that each one costs
what a fresh ``snakemake -n`` pays; median over ``--repeats`` after one warm-up (imports). Run it
with ``PYTHONPATH=<checkout>/src`` for each checkout to compare them.

    PYTHONPATH=src python bench/bench_config_checks.py
    PYTHONPATH=src python bench/bench_config_checks.py --config config/paper.yaml --repeats 9
"""

from __future__ import annotations

import argparse
import statistics
import time

import yaml


def clear_node_caches() -> None:
    """Forget the graph nodes traced so far (each module that traces keeps them per process)."""
    from preimage.features import efficientnet_lite, torchvision_net

    for module in (torchvision_net, efficientnet_lite):
        cached = getattr(module, "graph_nodes", None)
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    import preimage
    from preimage.config import validate_config

    with open(args.config) as handle:
        config = yaml.safe_load(handle)
    times = []
    for _ in range(args.repeats):
        clear_node_caches()
        start = time.perf_counter()
        validate_config(config, deep=True)
        times.append(time.perf_counter() - start)
    print(f"{preimage.__file__}: validate_config(deep=True) on {args.config}: median "
          f"{statistics.median(times[1:]):.3f} s over {len(times) - 1} runs (after one warm-up)")


if __name__ == "__main__":
    main()
