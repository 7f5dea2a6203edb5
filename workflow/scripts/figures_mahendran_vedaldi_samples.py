"""Snakemake adapter: rule mahendran_vedaldi_samples → preimage.baselines.samples_png."""
from preimage import logs

with logs.job(snakemake):
    from preimage import baselines

    baselines.samples_png(snakemake.input.images, snakemake.input.csv, snakemake.input.test_images,
                          snakemake.output[0], n_show=snakemake.params.n_show)
