"""Snakemake adapter: rule extract_data → preimage.data.extract."""
from preimage import logs

with logs.job(snakemake):
    from preimage import data

    data.extract(
        snakemake.params.data,
        {"train": snakemake.output.train, "test": snakemake.output.test},
        threads=snakemake.threads,
        log_every=snakemake.params.log_every,
    )
