"""Snakemake adapter: rule errors_table → preimage.tables.errors_table."""
from preimage import logs

with logs.job(snakemake):
    import pandas as pd
    from preimage import tables

    tables.errors_table([pd.read_csv(p) for p in snakemake.input.errors], snakemake.output.csv, snakemake.output.md)
