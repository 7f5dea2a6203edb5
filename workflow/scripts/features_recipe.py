"""Snakemake adapter: rule feature_recipe (features.store: recompute) → preimage.features.cache.write_recipe."""
from preimage import logs

with logs.job(snakemake):
    from preimage.features.cache import write_recipe

    write_recipe(
        snakemake.params.representation,
        snakemake.params.options,
        snakemake.input.images,
        snakemake.output[0],
        batch_size=snakemake.params.batch_size,
        dtype=snakemake.params.dtype,
        device=snakemake.params.device,
    )
