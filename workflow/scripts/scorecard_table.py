"""Snakemake adapter: rule scorecard_table → preimage.scorecard.scorecard_table and its figure."""
from preimage import logs

with logs.job(snakemake):
    from preimage.figures import scorecard_figure
    from preimage.scorecard import scorecard_table

    table = scorecard_table(list(snakemake.input), snakemake.output.csv, snakemake.output.md)
    scorecard_figure(table, snakemake.output.figure)
