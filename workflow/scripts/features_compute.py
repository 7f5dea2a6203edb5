"""Snakemake adapter: rules shallow_features / shallow_feature_shard (HOG, SIFT, LBP …) →
preimage.features.cache.compute_cache."""
from preimage import logs

with logs.job(snakemake):
    from preimage.features.cache import compute_cache

    shard = getattr(snakemake.params, "shard", None)
    compute_cache(
        snakemake.params.representation,
        snakemake.params.options,
        snakemake.input.images,
        snakemake.output[0],
        batch_size=snakemake.params.batch_size,
        dtype=snakemake.params.dtype,
        device=snakemake.params.device,
        workers=snakemake.threads,
        log_every=snakemake.params.log_every,
        shard=tuple(shard) if shard else None,
    )
