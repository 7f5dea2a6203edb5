"""Snakemake adapter: rule join_features → preimage.features.cache.join_caches."""
from preimage import logs

with logs.job(snakemake):
    from preimage.features.cache import join_caches

    join_caches(list(snakemake.input.shards), snakemake.output[0])
