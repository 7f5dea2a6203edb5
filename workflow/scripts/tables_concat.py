"""Snakemake adapter: per-representation CSVs → one table (preimage.experiments.concat_tables)."""
from preimage import logs

with logs.job(snakemake):
    from preimage import experiments

    experiments.concat_tables(list(snakemake.input), snakemake.output.csv, snakemake.output.md)
