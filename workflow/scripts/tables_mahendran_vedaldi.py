"""Snakemake adapter: per-representation M&V CSVs → one table with their claim (preimage.tables)."""
from preimage import logs

with logs.job(snakemake):
    from preimage import tables

    tables.mahendran_vedaldi_table(list(snakemake.input), snakemake.output.csv, snakemake.output.md,
                                   networks=snakemake.params.networks)
