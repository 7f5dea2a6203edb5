"""Snakemake adapter: rule interpolation_overview → preimage.figures.interpolation_overview."""
from preimage import logs

with logs.job(snakemake):
    from preimage import figures

    figures.interpolation_overview(dict(zip(snakemake.params.representations, snakemake.input)), snakemake.output[0])
