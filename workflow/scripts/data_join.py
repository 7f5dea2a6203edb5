"""Snakemake adapter: rule join_data → preimage.data.join_shards."""
from preimage import logs

with logs.job(snakemake):
    from preimage import data

    data.join_shards(
        {"train": list(snakemake.input.train), "test": list(snakemake.input.test)},
        {"train": snakemake.output.train, "test": snakemake.output.test},
    )
