"""Snakemake adapter: rule reconstructions_png → preimage.evaluate.reconstructions_png."""
from preimage import logs

with logs.job(snakemake):
    from preimage.evaluate import reconstructions_png

    reconstructions_png(snakemake.input.test_images, snakemake.input.reconstructions, snakemake.output[0],
                        snakemake.params.n_show)
