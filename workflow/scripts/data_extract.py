"""Snakemake adapter: rules extract_data / extract_shard → preimage.data.extract."""
from preimage import logs

with logs.job(snakemake):
    from preimage import data

    shard = getattr(snakemake.params, "shard", None)
    data.extract(
        snakemake.params.data,
        {"train": snakemake.output.train, "test": snakemake.output.test},
        threads=snakemake.threads,
        log_every=snakemake.params.log_every,
        shard=tuple(shard) if shard else None,
    )
