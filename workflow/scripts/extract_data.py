"""Snakemake adapter: rule extract_data → preimage.data.extract."""
from preimage import data, logs

logs.setup(snakemake.log[0])
data.extract(
    snakemake.params.data,
    {"train": snakemake.output.train, "test": snakemake.output.test},
    threads=snakemake.threads,
    log_every=snakemake.params.log_every,
)
