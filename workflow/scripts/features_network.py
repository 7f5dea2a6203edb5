"""Snakemake adapter: rules network_features_<network> / network_feature_shard_<network> →
preimage.features.cache.compute_network_caches (every node of one network in one forward pass)."""
from preimage import logs

with logs.job(snakemake):
    from preimage.features.cache import compute_network_caches

    shard = getattr(snakemake.params, "shard", None)
    compute_network_caches(
        snakemake.params.representations,
        snakemake.params.options,
        snakemake.input.images,
        list(snakemake.output),
        batch_size=snakemake.params.batch_size,
        dtype=snakemake.params.dtype,
        device=snakemake.params.device,
        log_every=snakemake.params.log_every,
        shard=tuple(shard) if shard else None,
    )
