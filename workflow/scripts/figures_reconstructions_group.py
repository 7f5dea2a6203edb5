"""Snakemake adapter: rule reconstructions_figure → preimage.figures.group_figure (Figures 3 and 5)."""
from preimage import logs

with logs.job(snakemake):
    from preimage import figures

    figures.group_figure(snakemake.input.test_images,
                         dict(zip(snakemake.params.representations, snakemake.input.reconstructions)),
                         snakemake.output[0], snakemake.params.n_show)
