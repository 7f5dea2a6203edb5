"""Snakemake adapter: per-representation CSVs → one table (preimage.tables.concat_tables)."""
from preimage import logs

with logs.job(snakemake):
    from preimage import tables

    tables.concat_tables(list(snakemake.input), snakemake.output.csv, snakemake.output.md)
