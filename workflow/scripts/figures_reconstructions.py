"""Snakemake adapter: rule reconstructions_png → preimage.figures.reconstructions_png."""
from preimage import logs

with logs.job(snakemake):
    from preimage import figures

    figures.reconstructions_png(snakemake.input.test_images, snakemake.input.reconstructions, snakemake.output[0],
                                snakemake.params.n_show)
