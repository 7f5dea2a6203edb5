"""Snakemake adapter: rule mahendran_vedaldi_samples → preimage.figures.mahendran_vedaldi_samples."""
from preimage import logs

with logs.job(snakemake):
    from preimage import figures

    figures.mahendran_vedaldi_samples(snakemake.input.images, snakemake.input.csv, snakemake.input.test_images,
                                      snakemake.output[0], n_show=snakemake.params.n_show)
