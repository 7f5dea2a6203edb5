"""Snakemake adapter: per-representation CSVs → one table (preimage.experiments.concat_tables)."""
from preimage import experiments, logs

logs.setup(snakemake.log[0])
experiments.concat_tables(list(snakemake.input), snakemake.output.csv, snakemake.output.md)
